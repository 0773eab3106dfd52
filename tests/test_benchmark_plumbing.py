"""The benchmark scripts' bookkeeping: what run.py holds out for search_distance, what
frontier.py keeps of a results file measured under the other ``--optimizer``, which rows it
plans per seed and in what order it measures them, and how its reports judge them."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from tfmot_wfn.keras.compat import IS_LEGACY_KERAS

if IS_LEGACY_KERAS:
    # run.py refuses to import under legacy Keras (it measures Keras 3; tfmot runs in a subprocess).
    pytest.skip("the benchmark scripts run under Keras 3", allow_module_level=True)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import auto_margin  # noqa: E402
import frontier  # noqa: E402
import run  # noqa: E402


def test_held_out_images_are_the_last_fifth_of_the_training_split_and_nothing_else():
    x_train, y_train = np.arange(100).reshape(100, 1), np.arange(100) % 10
    x_test, y_test = np.arange(7).reshape(7, 1), np.arange(7)
    (xt, xs, yt, ys), (xv, yv) = run.held_out((x_train, x_test, y_train, y_test))
    assert len(xt) == 80 and len(xv) == 20
    assert set(xt[:, 0]).isdisjoint(xv[:, 0])  # no model trains on a validation image
    np.testing.assert_array_equal(np.concatenate([xt, xv]), x_train)
    np.testing.assert_array_equal(np.concatenate([yt, yv]), y_train)
    assert xs is x_test and ys is y_test  # the test split is untouched


def test_switching_the_optimizer_drops_only_the_rows_that_fine_tune_under_it():
    results = {"_optimizer": "carried",
               "cnn": {"seeds": {"0": {"float": {}, "int8 PTQ": {}, "tfmot-16": {},
                                       frontier.CONTROL_LABEL: {},
                                       "WFN paper delta=0.015": {}, "WFN third delta=0.03": {}}}}}
    frontier.keep_only_peer_rows(results)
    assert sorted(results["cnn"]["seeds"]["0"]) == ["float", "int8 PTQ", "tfmot-16"]
    assert results["_optimizer"] == "carried"  # main() records the new choice itself


def test_a_results_file_from_before_the_option_reads_as_carried(tmp_path):
    assert frontier.OPTIMIZER_BEFORE == "carried" and frontier.OPTIMIZERS["fresh"] == {"fresh_optimizer": True}
    text = frontier.write_report({}, str(tmp_path / "f.md"), None)
    assert "fresh_optimizer=False" in text and "--optimizer carried" in text
    text = frontier.write_report({"_optimizer": "fresh"}, str(tmp_path / "f.md"), None)
    assert "fresh optimizer at every stage" in text and "--optimizer" not in text


def _row(correct, kernels, entropy, rule=None, delta=None, fixed=None):
    row = {"accuracy": float(np.mean(correct)), "correct": frontier.pack(np.asarray(correct, bool)),
           "unique_all": kernels + 100, "unique_kernels": kernels, "entropy_all": entropy + 0.1,
           "entropy_kernels": entropy}
    if rule:
        row.update(rule=rule, delta=delta, wfn={"fixable_unique": fixed[0], "fixable_entropy": fixed[1]})
    return row


def _targets(rows_per_seed):
    per_model = {"title": "t", "test_images": 200, "train_images": 10,
                 "seeds": {str(s): rows for s, rows in enumerate(rows_per_seed)}}
    lines = frontier.targets_table({"resnet20": per_model})
    return [line for line in lines if line.startswith("| resnet20")]


def test_the_targets_judge_the_default_rule_on_every_seed_against_tfmot_and_the_paper():
    default = frontier.models.default_rule("resnet20")
    assert default == frontier.fixing_rules.PLAIN_RULE  # rule="auto" on a net without depthwise
    right = np.ones(200, bool)
    one_wrong = right.copy()
    one_wrong[0] = False  # 0.5 points: still lossless
    two_wrong = one_wrong.copy()
    two_wrong[1] = False  # 1.0 point
    seed = {"float": _row(right, 1000, 9.0), "tfmot-16": _row(two_wrong, 350, 7.5),
            f"WFN {default} delta=0.015": _row(one_wrong, 60, 3.5, default, 0.015, (66, 3.50)),
            "WFN paper delta=0.015": _row(two_wrong, 50, 3.4, "paper", 0.015, (60, 3.45)),
            f"WFN {default} delta=0.03": _row(two_wrong, 30, 3.0, default, 0.03, (35, 3.0)),
            "WFN nearest_capped delta=0.03": _row(one_wrong, 40, 3.1, "nearest_capped", 0.03, (45, 3.1))}
    headline, rule, larger = _targets([seed, seed])
    # Lossless at 0.015 only (0.03 loses a point): 350 / 60 = 5.8x values, 7.5 / 3.5 = 2.14x bits.
    assert "delta 0.015, +0.50" in headline and "5.8x" in headline and "2.14x" in headline
    assert "[seeds +0.50, +0.50]" in headline  # the seeds' spread beside the paired SE
    assert headline.endswith("| yes |")
    assert "1.10x" in rule and "1.014x" in rule and rule.endswith("| yes |")  # 66/60, 3.50/3.45
    assert "+1.00" in larger and "+0.50" in larger and larger.endswith("| **no** |")

    # A row that ran on one seed of two does not count: no lossless default row is left.
    short = dict(seed)
    del short[f"WFN {default} delta=0.015"]
    headline = _targets([seed, short])[0]
    assert "no lossless row" in headline and "delta 0.03: +1.00 [seeds +1.00, +1.00]" in headline
    assert headline.endswith("| **no** |")


def test_the_hindsight_table_asks_whether_any_lossless_row_meets_both_auto_targets():
    default = frontier.models.default_rule("resnet20")
    right = np.ones(200, bool)
    two_wrong = right.copy()
    two_wrong[:2] = False  # 1 point: not lossless
    seed = {"float": _row(right, 1000, 9.0), "tfmot-16": _row(right, 350, 7.5),  # 7.6 bits stored
            f"WFN {default} delta=0.015": _row(right, 60, 3.5, default, 0.015, (66, 3.5)),
            f"WFN {default} delta=0.03": _row(right, 40, 4.4, default, 0.03, (40, 4.4)),
            f"WFN {default} delta=0.05": _row(two_wrong, 10, 1.0, default, 0.05, (11, 1.0)),
            "WFN paper delta=0.03": _row(right, 30, 3.9, "paper", 0.03, (30, 3.9))}
    per_model = {"title": "t", "test_images": 200, "train_images": 10, "seeds": {"0": seed, "1": seed}}
    line = [x for x in frontier.hindsight_table({"resnet20": per_model}) if x.startswith("| resnet20")]
    cells = [c.strip() for c in line[0].split("|")[1:-1]]
    assert cells[1] == "0.015, 0.03 (swept 0.015, 0.03, 0.05)"  # 0.05 loses a point
    # Neither lossless default row meets both: 0.03 has 66 / 40 = 1.65x values, 7.6 / 4.5 = 1.69x.
    assert cells[2] == f"`{default}` 0.03: +0.00, 1.65x / 1.69x" and cells[3] == "**no**"
    assert cells[4] == "`paper` 0.03: +0.00, 2.20x / 1.90x (both)"  # 66 / 30, 7.6 / 4.0
    # Without tfmot on every seed there is nothing to compare the entropy with: no line.
    del seed["tfmot-16"]
    per_model["seeds"]["1"] = dict(seed)
    assert not [x for x in frontier.hindsight_table({"resnet20": per_model}) if x.startswith("| resnet20")]


def test_every_seed_runs_each_models_default_rule_and_the_paper_rule_where_it_is_judged():
    # The targets count only rows measured on every seed (the test above).
    for name, (deltas, every_seed, first_only, _) in frontier.PLAN.items():
        assert frontier.models.default_rule(name) in every_seed, name
        if name in frontier.RULE_MODELS:
            assert "paper" in every_seed, name
        if max(deltas) > max(frontier.SMALL_DELTAS):  # judged against 0.1's default there
            assert frontier.BEFORE_RULE in every_seed, name
        planned = [label for label, _, _ in frontier._planned_rows(name, 1, quick=False)[0]]
        first = [label for label, _, _ in frontier._planned_rows(name, 0, quick=False)[0]]
        headline = [label for label, _, _ in frontier._planned_rows(name, 0, False, ablation=False)[0]]
        assert planned == headline
        assert set(planned) < set(first)
        assert not any(label.startswith(f"WFN {rule} ") for label in planned for rule in first_only)


def test_results_md_copies_the_rule_ablation_of_frontier_md_and_nothing_after_it(tmp_path):
    path = tmp_path / "FRONTIER.md"
    assert run.rule_ablation_section(str(path)) == []  # no frontier run yet: no section
    path.write_text("# F\n\n## Targets\n\n| t |\n\n## Fixing-rule ablation\n\nSame seeds.\n\n| a |\n|---|\n"
                    "| resnet20 |\n\n## Later\n\nnot this\n")
    lines = run.rule_ablation_section(str(path))
    assert lines[0].startswith("## 6. Fixing-rule ablation")
    text = "\n".join(lines)
    assert "| resnet20 |" in text and "Same seeds." in text
    assert "## Targets" not in text and "not this" not in text


def test_the_header_sums_the_rows_measuring_time_over_resumed_runs():
    seeds = {"0": {"float": {"seconds": 1800.0}, "WFN paper delta=0.015": {"seconds": 5400.0}},
             "1": {"float": {"seconds": None}}}  # a float model from the cache: no time of its own
    note = frontier._measured_note({"cnn": {"seeds": seeds}, "mlp": {"seeds": {}}})
    assert note == " (its rows took 2.0 h to measure, over the runs that wrote them)"
    seeds["0"]["WFN paper delta=0.015"]["seconds"] = 600.0
    assert "took 40 min to measure" in frontier._measured_note({"cnn": {"seeds": seeds}})
    assert frontier._measured_note({}) == ""


def test_mobilenet_rows_are_judged_for_collapse_at_every_delta_and_small_deltas_by_the_paper():
    default = frontier.models.default_rule("mobilenetv2")
    assert default == frontier.fixing_rules.DEPTHWISE_RULE
    right = np.ones(200, bool)
    one_wrong, two_wrong = right.copy(), right.copy()
    one_wrong[0] = False
    two_wrong[:2] = False
    seed = {"float": _row(right, 1000, 9.0), "tfmot-16": _row(right, 350, 7.5),
            f"WFN {default} delta=0.005": _row(one_wrong, 60, 3.5, default, 0.005, (66, 3.5)),
            "WFN nearest_capped delta=0.005": _row(right, 70, 3.6, "nearest_capped", 0.005, (70, 3.6)),
            f"WFN {default} delta=0.0075": _row(two_wrong, 50, 3.4, default, 0.0075, (55, 3.4))}
    per_model = {"title": "t", "test_images": 200, "train_images": 10,
                 "seeds": {"0": seed, "1": seed}}
    lines = [line for line in frontier.targets_table({"mobilenetv2": per_model})
             if line.startswith("| mobilenetv2")]
    collapse = [line for line in lines if "no collapse" in line]
    # 0.005: +0.50, lossless. 0.0075: +1.00 points, two seeds' paired SE 0.50: outside 2 SE.
    assert "+0.50" in collapse[0] and "`nearest_capped` +0.00" in collapse[0]
    assert collapse[0].endswith("| yes |")
    assert "delta 0.0075" in collapse[1] and "+1.00 ± 0.50" in collapse[1]
    assert collapse[1].endswith("| **no** |")
    # A delta below the small ones is not judged against the old default's loss.
    assert not any("no more loss" in line for line in lines)


def test_the_model_specs_depthwise_flag_is_what_fix_weights_sees():
    # models.default_rule reads the spec's flag (no model is built for a report); it must agree
    # with what rule="auto" finds in the built model.
    import keras

    from tfmot_wfn.keras.cloning import walk_layers
    from tfmot_wfn.keras.fixable_layer import has_depthwise

    for name, spec in frontier.models.MODELS.items():
        built = frontier.models.build(name, keras)
        assert spec.get("depthwise", False) == has_depthwise(walk_layers(built)), name


def test_rows_of_float_models_trained_otherwise_are_dropped():
    trained = {"epochs": 60, "lr": 3e-3, "augment": True}
    old = {"seeds": {"0": {"float": {}}}}  # a file from before the record: kept
    assert not frontier.record_float_training(old, trained) and old["seeds"] == {"0": {"float": {}}}
    assert old["float_training"] == trained
    other = {"seeds": {"0": {"float": {}}}, "float_training": {**trained, "augment": False}}
    assert frontier.record_float_training(other, trained)
    assert other["seeds"] == {} and other["float_training"] == trained


def test_rows_fine_tuned_at_another_lr_are_dropped_and_the_float_and_int8_rows_kept():
    rows = {"float": {}, "int8 PTQ": {}, "tfmot-16": {}, frontier.CONTROL_LABEL: {},
            "WFN paper delta=0.015": {}, frontier.AUTO_LABEL: {}}
    old = {"seeds": {"0": dict(rows)}}  # a file from before the record: kept
    assert not frontier.record_fine_tuning(old, {"lr": 3e-4}) and old["seeds"]["0"] == rows
    assert not frontier.record_fine_tuning(old, {"lr": 3e-4})
    assert frontier.record_fine_tuning(old, {"lr": 1e-3})
    assert sorted(old["seeds"]["0"]) == ["float", "int8 PTQ"] and old["fine_tuning"] == {"lr": 1e-3}


def _augmented_reference(x, pad, top, left, flip):
    """One image at a time: reflect-pad, crop at (top, left), flip when asked."""
    h, w = x.shape[:2]
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    crop = padded[top:top + h, left:left + w]
    return crop[:, ::-1] if flip else crop


def test_augmented_epochs_are_reflect_padded_crops_flipped_at_random_and_reproducible():
    rng = np.random.default_rng(3)
    x = rng.random((40, 8, 6, 3)).astype(np.float32)
    first = list(run.augmented_epochs(x, 3, seed=7, pad=2))
    again = list(run.augmented_epochs(x, 3, seed=7, pad=2))
    other = list(run.augmented_epochs(x, 3, seed=8, pad=2))
    assert len(first) == 3 and all(e.shape == x.shape and e.dtype == x.dtype for e in first)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)  # a seed gives the same copies
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[1])  # each epoch is a new draw
    offsets, flips = set(), []
    for epoch in first:
        for image, crop in zip(x, epoch):
            # Every copy is one of the (2 pad + 1)^2 crops of the padded image, or its mirror.
            matches = [(t, left, f) for t in range(5) for left in range(5) for f in (False, True)
                       if np.array_equal(crop, _augmented_reference(image, 2, t, left, f))]
            assert matches, "a copy that is no crop of the reflect-padded image"
            offsets.add(matches[0][:2])
            flips.append(matches[0][2])
    assert len(offsets) > 15 and 0.3 < np.mean(flips) < 0.7  # the draws cover the range


def _passes(dataset):
    """Two passes over a batched (x, y) dataset, each as (images, labels) arrays."""
    out = []
    for _ in range(2):
        batches = [(np.asarray(x), np.asarray(y)) for x, y in dataset]
        out.append((batches, np.concatenate([b[0] for b in batches]),
                    np.concatenate([b[1] for b in batches])))
    return out


def test_augmented_fine_tuning_data_are_padded_crops_reshuffled_every_pass():
    rng = np.random.default_rng(5)
    x = rng.random((30, 16, 16, 3)).astype(np.float32)  # padded by 16 / 8 = 2
    y = np.arange(30)  # a label per image: which image each augmented copy came from
    (batches, first, labels), (_, second, labels2) = _passes(
        run.models.augmented_dataset(x, y, batch=8, seed=3))
    assert [len(b[1]) for b in batches] == [8, 8, 8, 6]  # fit(x, y, batch_size=8)'s batches
    assert sorted(labels) == list(range(30)) and sorted(labels2) == list(range(30))
    assert not np.array_equal(labels, labels2)  # each pass is a new order ...
    offsets, flips = set(), []
    for images, order in ((first, labels), (second, labels2)):
        for crop, index in zip(images, order):
            matches = [(t, left, f) for t in range(5) for left in range(5) for f in (False, True)
                       if np.array_equal(crop, _augmented_reference(x[index], 2, t, left, f))]
            assert matches, "a copy that is no crop of its reflect-padded image"
            offsets.add(matches[0][:2])
            flips.append(matches[0][2])
    assert len(offsets) > 12 and 0.25 < np.mean(flips) < 0.75  # ... and new crops and flips
    again = _passes(run.models.augmented_dataset(x, y, batch=8, seed=3))
    np.testing.assert_array_equal(again[0][1], first)  # a seed gives the same passes
    np.testing.assert_array_equal(again[1][1], second)


def test_only_the_models_trained_on_augmented_images_fine_tune_on_them():
    x = np.zeros((10, 32, 32, 3), np.float32)
    y = np.zeros(10, np.int64)
    for name, spec in run.models.MODELS.items():
        inputs = run.fine_tune_inputs(name, x, y, seed=0)
        tuning = frontier.fine_tuning(name)
        if spec.get("augment"):
            assert set(inputs) == {"x", "shuffle"} and not inputs["shuffle"]
            assert tuning == {"lr": run.FINE_TUNE_LR[name], "augment": True}
        else:  # the records of the digit models match the files written before the key
            assert inputs["x"] is x and inputs["y"] is y and inputs["batch_size"] == spec["batch"]
            assert tuning == {"lr": run.FINE_TUNE_LR[name]}
    per_model = {"seeds": {"0": {"float": {}, "tfmot-16": {}}}, "fine_tuning": {"lr": 3e-4}}
    assert frontier.record_fine_tuning(per_model, frontier.fine_tuning("resnet20"))
    assert per_model["seeds"]["0"] == {"float": {}}  # rows fine-tuned on plain photos go
    assert "augmented images (a new crop" in frontier.float_training_note("resnet20", per_model)


def test_the_quick_mode_plans_every_rule_at_the_first_delta_and_no_tfmot():
    for name, (deltas, every_seed, first_only, _) in frontier.PLAN.items():
        quick = frontier._planned_rows(name, 0, quick=True)[0]
        assert [(rule, delta) for _, rule, delta in quick if rule] == [
            (rule, deltas[0]) for rule in (*every_seed, *first_only)]
        labels = [label for label, _, _ in quick]
        assert "tfmot-16" not in labels and frontier.CONTROL_LABEL in labels


def test_the_auto_split_halves_the_test_images_per_seed_and_never_overlaps():
    validate, measure = frontier.auto_split(101, seed=0)
    assert validate.sum() == 50 and measure.sum() == 51 and not np.any(validate & measure)
    again, _ = frontier.auto_split(101, seed=0)
    other, _ = frontier.auto_split(101, seed=1)
    np.testing.assert_array_equal(validate, again)
    assert not np.array_equal(validate, other)  # each seed draws its own halves


def test_the_auto_row_is_judged_only_on_the_images_it_did_not_choose_on():
    default = frontier.models.default_rule("resnet20")
    n = 200
    validate, measure = frontier.auto_split(n, seed=0)
    right = np.ones(n, bool)
    # Wrong on every validation image and on one measured image.
    wrong_where_validated = right.copy()
    wrong_where_validated[validate] = False
    wrong_where_validated[np.flatnonzero(measure)[0]] = False
    auto = _row(wrong_where_validated, 20, 2.0)
    auto.update(accuracy=float(wrong_where_validated[measure].mean()), measured=frontier.pack(measure),
                delta=0.05, search_seconds=30.0,
                wfn={"fixable_unique": 22, "fixable_entropy": 2.0, "full_run_seconds": 12.0})
    seed = {"float": _row(right, 1000, 9.0), "tfmot-16": _row(right, 350, 7.5),
            f"WFN {default} delta=0.015": _row(right, 60, 3.5, default, 0.015, (66, 3.5)),
            frontier.AUTO_LABEL: auto}
    summary = {r["label"]: r for r in frontier.summarise(
        {"test_images": n, "seeds": {"0": seed, "1": seed}})}
    # One wrong image of the 100 measured ones: 1 point, whatever it got wrong on the others.
    assert summary[frontier.AUTO_LABEL]["drop"] == pytest.approx(100 / measure.sum())
    assert list(summary)[-1] == frontier.AUTO_LABEL  # listed after the delta rows
    lines = [line for line in _targets([seed, seed]) if "distance=auto" in line]
    values, entropy, time = lines
    assert "chose 0.05, 0.05 over 2 seeds" in values and "66.0 / 22.0 = 3.00x" in values
    assert values.endswith("| **no** |")  # 1 point lost: not lossless although 3x fewer values
    assert "7.60 / 2.10 = 3.62x" in entropy and entropy.endswith("| yes |")
    assert "2.50x" in time and time.endswith("| yes |")  # 30 s against a 12 s run alone
    seed[frontier.AUTO_LABEL] = dict(auto, correct=frontier.pack(measure), accuracy=1.0)
    values = [line for line in _targets([seed, seed]) if "distance=auto" in line][0]
    assert "+0.00" in values and values.endswith("| yes |")  # only validation images lost
    # An auto row paired with its own float model (retraining did not reproduce the saved one):
    # that model got the first measured image wrong too, so nothing is lost against it.
    own = right.copy()
    own[np.flatnonzero(measure)[0]] = False
    seed[frontier.AUTO_LABEL] = dict(auto, float_correct=frontier.pack(own), own_float=True)
    values = [line for line in _targets([seed, seed]) if "distance=auto" in line][0]
    assert "+0.00" in values and "2 of them against a retrained float model" in values


def _auto_row(runs, version=None, float_accuracy=0.9):
    """An auto row whose search made ``runs``: (delta, source, validation accuracy)."""
    right = np.ones(200, bool)
    _, measure = frontier.auto_split(200, seed=0)
    row = _row(right, 20, 2.0)
    row.update(measured=frontier.pack(measure), delta=runs[-1][0], search_seconds=30.0,
               wfn={"fixable_unique": 22, "fixable_entropy": 2.0, "full_run_seconds": 12.0,
                    "float_validation_accuracy": float_accuracy,
                    "runs": [{"distance": d, "source": s, "accuracy": a} for d, s, a in runs]})
    if version is not None:
        row["search_version"] = version
    return row


def test_auto_rows_of_an_older_search_are_reported_and_redone():
    walked_down = [(0.04, "proxy", 0.9), (0.065, "full", 0.8), (0.05, "full", 0.8)]
    fell_back = [(0.04, "proxy", 0.9), (0.015, "full", 0.8), (0.0075, "full", 0.9)]
    assert frontier.AUTO_SEARCH_VERSION == 3  # version 3 changed every run's pass test
    assert frontier.stale_auto_row(_auto_row(fell_back), "resnet20")  # no record: version 1
    assert frontier.stale_auto_row(_auto_row(walked_down, 2), "resnet20")
    assert not frontier.stale_auto_row(_auto_row(walked_down, frontier.AUTO_SEARCH_VERSION), "resnet20")
    default = frontier.models.default_rule("resnet20")
    right = np.ones(200, bool)
    stale, current = _auto_row(walked_down, 2), _auto_row(walked_down, frontier.AUTO_SEARCH_VERSION)
    seeds = [{"float": _row(right, 1000, 9.0), f"WFN {default} delta=0.015": _row(right, 60, 3.5, default, 0.015, (66, 3.5)),
              frontier.AUTO_LABEL: row} for row in (stale, current, _auto_row(fell_back))]
    values = [line for line in _targets(seeds) if "distance=auto" in line][0]
    assert "2 of 3 measured by an older search (version 1, 2) that version 3 could choose differently" in values
    per_model = {"seeds": {str(i): rows for i, rows in enumerate(seeds)}}
    assert frontier.drop_stale_auto_rows("resnet20", per_model, seeds=[1]) == 0  # seed 1's is current
    assert frontier.drop_stale_auto_rows("resnet20", per_model, seeds=[0]) == 1
    assert frontier.AUTO_LABEL not in seeds[0] and "float" in seeds[0]  # only the auto row goes
    assert seeds[1][frontier.AUTO_LABEL] is current
    assert frontier.drop_stale_auto_rows("resnet20", per_model) == 1  # seed 2's
    values = [line for line in _targets(seeds[1:2]) if "distance=auto" in line][0]
    assert "older search" not in values


def test_auto_rows_of_another_rule_than_todays_default_are_reported_and_redone():
    # A row without a rule record ran under the defaults of then: late_third on the depthwise
    # models, bounded_third on the others; rows record their rule since.
    runs = [(0.04, "proxy", 0.9), (0.0075, "full", 0.9)]
    current = frontier.AUTO_SEARCH_VERSION
    unrecorded, gentle = _auto_row(runs, current), _auto_row(runs, current)
    gentle["search_rule"] = "gentle"
    assert frontier.auto_rule("mobilenetv2", unrecorded) == "late_third"
    assert frontier.auto_rule("resnet20", unrecorded) == "bounded_third"
    assert frontier.models.default_rule("mobilenetv2") == "gentle"
    assert frontier.stale_auto_row(unrecorded, "mobilenetv2")
    assert not frontier.stale_auto_row(gentle, "mobilenetv2")
    assert not frontier.stale_auto_row(unrecorded, "resnet20")
    assert frontier.stale_auto_row(gentle, "resnet20")
    # The report says how many seeds ran under another rule; a rerun drops only those.
    default = frontier.models.default_rule("resnet20")
    right = np.ones(200, bool)
    seeds = [{"float": _row(right, 1000, 9.0),
              f"WFN {default} delta=0.015": _row(right, 60, 3.5, default, 0.015, (66, 3.5)),
              frontier.AUTO_LABEL: row} for row in (gentle, unrecorded)]
    values = [line for line in _targets(seeds) if "distance=auto" in line][0]
    assert "1 of 2 ran under the rule gentle, not today's default bounded_third" in values
    assert "older search" not in values
    # The record is not ``rule``, which would make the auto row one of the rule's rows at the
    # delta it chose (the headline and collapse targets would judge the search's row).
    summary = frontier.summarise({"test_images": 200, "seeds": {str(i): s for i, s in enumerate(seeds)}})
    assert [r["rule"] for r in summary if r["label"] == frontier.AUTO_LABEL] == [None]
    per_model = {"seeds": {str(i): rows for i, rows in enumerate(seeds)}}
    assert frontier.drop_stale_auto_rows("resnet20", per_model) == 1
    assert frontier.AUTO_LABEL not in seeds[0] and seeds[1][frontier.AUTO_LABEL] is unrecorded


def test_the_auto_target_says_how_many_validation_images_one_se_within_tolerance_needs():
    # At the default delta 2 of 200 test images change answer on one seed, 4 on the other (one
    # gained, three lost): 1.5% flip, so m >= 0.015 / 0.005^2 = 600 validation images.
    default = frontier.models.default_rule("resnet20")
    right = np.ones(200, bool)
    two, four = right.copy(), right.copy()
    two[:2] = False
    four[:3] = False
    float_four = right.copy()
    float_four[199] = False  # the float model's error that the fixed one gets right
    runs = [(0.04, "proxy", 0.9), (0.0075, "full", 0.9)]
    seeds = [{"float": _row(f, 1000, 9.0), f"WFN {default} delta=0.015": _row(w, 60, 3.5, default, 0.015, (66, 3.5)),
              frontier.AUTO_LABEL: _auto_row(runs, frontier.AUTO_SEARCH_VERSION)}
             for f, w in ((right, two), (float_four, four))]
    values = [line for line in _targets(seeds) if "distance=auto" in line][0]
    assert ("at delta 0.015 1.5% of the test images change answer, so one paired SE within the "
            "tolerance needs about 600 validation images (the search had 100)") in values
    # A row that records its validation set says so; one that does not validated on n // 2
    # test images (`auto_split`: 100 of 201, scored on the other 101).
    odd = [dict(s, float=_row(np.r_[right, True], 1000, 9.0),
                **{f"WFN {default} delta=0.015": _row(np.r_[right, False], 60, 3.5, default, 0.015, (66, 3.5))})
           for s in seeds]
    assert frontier.auto_split(201, seed=0)[0].sum() == 100
    assert "(the search had 100)" in frontier._validation_needed(odd, f"WFN {default} delta=0.015", 201)
    odd[0][frontier.AUTO_LABEL] = dict(odd[0][frontier.AUTO_LABEL], wfn={"validation_images": 180})
    assert "(the search had 180)" in frontier._validation_needed(odd, f"WFN {default} delta=0.015", 201)


def test_an_auto_row_records_the_rule_of_its_search_apart_from_the_rule_rows(monkeypatch):
    # `_auto_row` itself (the search and the scoring stubbed): the rule ``rule="auto"`` picks for
    # the model goes to ``search_rule``, so the row is current and not one of gentle's rows.
    right = np.ones(200, bool)
    data = (np.zeros((4, 2)), np.zeros((200, 2)), np.zeros(4), np.zeros(200))
    monkeypatch.setattr(frontier.run, "auto_distance",
                        lambda *args: ("final", 30.0, {"distance": 0.015, "full_run_seconds": 12.0}))
    monkeypatch.setattr(frontier.run, "scored_row", lambda model, data: _row(right, 60, 3.5))
    row = frontier._auto_row("mobilenetv2", "base", data, 1, 0, _row(right, 1000, 9.0), False)
    assert row["search_rule"] == frontier.models.default_rule("mobilenetv2") == "gentle"
    assert "rule" not in row and row["delta"] == 0.015
    assert not frontier.stale_auto_row(row, "mobilenetv2")


def _stub_measuring(monkeypatch, floats):
    """measure_model without training: seed s's float model is ``floats[s]`` (its row's
    ``correct``), and every missing row is 'measured' as ``{"base": the model used}``. Returns
    the (seed, label) calls in order and the seeds whose float model was loaded."""
    calls, loaded = [], []
    monkeypatch.setattr(frontier.models, "dataset",
                        lambda name, seed: (np.zeros((4, 1)), np.zeros((3, 1)), np.zeros(4), np.zeros(3)))

    def cached(name, data, epochs, seed, cache):
        loaded.append(seed)
        return floats[seed], 1.0

    def measure(name, base, data, planned, done, eps, seed, float_row, own_float, optimizer, save):
        for label, _, _ in planned:
            if label not in done:
                calls.append((seed, label))
                done[label] = {"base": base}

    monkeypatch.setattr(frontier.run, "cached_float_model", cached)
    monkeypatch.setattr(frontier.run, "scored_row", lambda base, data: {"accuracy": 1.0, "correct": base})
    monkeypatch.setattr(frontier, "_measure_rows", measure)
    return calls, loaded


def test_a_rerun_measures_a_stale_auto_row_again_and_keeps_the_seeds_other_rows(monkeypatch):
    calls, _ = _stub_measuring(monkeypatch, {0: "float0"})
    results = {}
    frontier.measure_model("resnet20", [0], results, save=lambda: None, quick=False)
    rows = results["resnet20"]["seeds"]["0"]
    rows[frontier.AUTO_LABEL] = _auto_row([(0.04, "proxy", 0.9), (0.065, "full", 0.8), (0.05, "full", 0.8)])
    calls.clear()
    frontier.measure_model("resnet20", [0], results, save=lambda: None, quick=False)
    assert calls == [(0, frontier.AUTO_LABEL)]


def test_every_seeds_rows_come_before_the_first_seeds_ablation_rows_on_its_same_float_model(monkeypatch):
    calls, loaded = _stub_measuring(monkeypatch, {0: "float0", 1: "float1"})
    results = {}
    frontier.measure_model("resnet20", [0, 1], results, save=lambda: None, quick=False)
    first_only = frontier.PLAN["resnet20"][2]
    ablation = [i for i, (_, label) in enumerate(calls) if any(label.startswith(f"WFN {r} ") for r in first_only)]
    last_seed_1 = max(i for i, (seed, _) in enumerate(calls) if seed == 1)
    assert ablation and min(ablation) > last_seed_1
    assert all(calls[i][0] == 0 for i in ablation)
    assert loaded == [0, 1]  # the first seed's float model is not loaded (retrained) again
    seeds = results["resnet20"]["seeds"]
    assert {row.get("base") for label, row in seeds["0"].items() if label != "float"} == {"float0"}


def test_a_retrained_first_seed_missing_ablation_rows_is_redone_not_paired_with_its_old_float(monkeypatch):
    calls, _ = _stub_measuring(monkeypatch, {0: "new float0"})
    planned = [label for label, _, _ in frontier._planned_rows("resnet20", 0, False, ablation=False)[0]]
    spec = frontier.models.MODELS["resnet20"]
    old = {label: {"base": "old float0"} for label in planned if label not in ("float", frontier.AUTO_LABEL)}
    old["float"] = {"accuracy": 1.0, "correct": "old float0"}
    results = {"resnet20": {"title": "t", "test_images": 3, "train_images": 4, "seeds": {"0": old},
                            "float_training": {"epochs": spec["float_epochs"], "lr": spec["float_lr"],
                                               "augment": bool(spec.get("augment", False))}}}
    frontier.measure_model("resnet20", [0], results, save=lambda: None, quick=False)
    rows = results["resnet20"]["seeds"]["0"]
    assert rows["float"]["correct"] == "new float0"
    assert {row.get("base") for label, row in rows.items() if label != "float"} == {"new float0"}
    assert (0, f"WFN {frontier.models.default_rule('resnet20')} delta=0.015") in calls


def test_a_retrained_float_model_missing_only_the_control_row_pairs_it_with_itself(monkeypatch):
    # The saved rows stay paired with the saved float model; the new control row is paired with
    # the float model it fine-tuned (its own ``float_correct``), and nothing is redone.
    _, loaded = _stub_measuring(monkeypatch, {0: "float0", 1: "new float1"})
    first = {label: {} for label, _, _ in frontier._planned_rows("resnet20", 0, False)[0]}
    first["float"] = {"accuracy": 1.0, "correct": "float0"}  # seed 0: every row measured
    first[frontier.AUTO_LABEL] = {"search_version": frontier.AUTO_SEARCH_VERSION}
    planned = [label for label, _, _ in frontier._planned_rows("resnet20", 1, False)[0]]
    assert frontier.CONTROL_LABEL in planned
    spec = frontier.models.MODELS["resnet20"]
    old = {label: {"base": "old float1"} for label in planned if label != frontier.CONTROL_LABEL}
    old["float"] = {"accuracy": 1.0, "correct": "old float1"}
    old[frontier.AUTO_LABEL]["search_version"] = frontier.AUTO_SEARCH_VERSION
    results = {"resnet20": {"title": "t", "test_images": 3, "train_images": 4,
                            "seeds": {"0": first, "1": old},
                            "float_training": {"epochs": spec["float_epochs"], "lr": spec["float_lr"],
                                               "augment": bool(spec.get("augment", False))}}}
    seen = {}

    def measure(name, base, data, planned, done, eps, seed, float_row, own_float, *rest):
        seen.update(base=base, own_float=own_float, float_row=float_row)
        done.update({label: {"base": base} for label, _, _ in planned if label not in done})

    monkeypatch.setattr(frontier, "_measure_rows", measure)
    frontier.measure_model("resnet20", [0, 1], results, save=lambda: None, quick=False)
    assert loaded == [1]
    rows = results["resnet20"]["seeds"]["1"]
    assert rows["float"]["correct"] == "old float1"  # kept: the saved rows are paired with it
    assert rows[frontier.CONTROL_LABEL] == {"base": "new float1"}
    assert {row.get("base") for label, row in rows.items() if label not in ("float", frontier.CONTROL_LABEL)} == {"old float1"}
    assert seen == {"base": "new float1", "own_float": True,
                    "float_row": {"accuracy": 1.0, "correct": "new float1", "seconds": 1.0}}


def test_the_control_row_is_judged_against_its_own_float_model():
    n = 100
    right = np.ones(n, bool)
    tuned = right.copy()
    tuned[:3] = False  # the fine-tuned model loses 3 images against the float model it started from
    own = right.copy()
    own[:2] = False  # ... which itself got 2 of them wrong: 1 point lost, not 3
    seed = {"float": _row(right, 1000, 9.0),
            frontier.CONTROL_LABEL: dict(_row(tuned, 1000, 9.0), float_correct=frontier.pack(own))}
    summary = {r["label"]: r for r in frontier.summarise({"test_images": n, "seeds": {"0": seed}})}
    assert summary[frontier.CONTROL_LABEL]["drop"] == pytest.approx(1.0)
    del seed[frontier.CONTROL_LABEL]["float_correct"]
    summary = {r["label"]: r for r in frontier.summarise({"test_images": n, "seeds": {"0": seed}})}
    assert summary[frontier.CONTROL_LABEL]["drop"] == pytest.approx(3.0)


def test_the_control_fine_tunes_stage_by_stage_for_as_many_epochs_as_a_fixing_run(monkeypatch):
    calls = []

    class Model:
        def set_weights(self, weights):
            calls.append(("weights", weights))

        def compile(self, **kwargs):
            calls.append("compile")

        def fit(self, x, y, batch_size, epochs, verbose):
            calls.append(epochs)

    class Base:
        def get_weights(self):
            return ["float weights"]

    monkeypatch.setattr(run.models, "build", lambda name, keras: Model())
    data = (np.zeros((4, 1)), None, np.zeros(4), None)
    for eps in (1, 2):
        calls.clear()
        run.fine_tune_alone("cnn", Base(), data, eps, 0, 1e-3)
        epochs = [c for c in calls if isinstance(c, int)]
        assert calls[0] == ("weights", ["float weights"])
        assert sum(epochs) == run.fine_tune_epochs(eps) and epochs[-1] == 1
        assert calls.count("compile") == len(epochs)  # a fresh optimizer every stage
        calls.clear()
        run.fine_tune_alone("cnn", Base(), data, eps, 0, 1e-3, fresh_optimizer=False)
        assert calls.count("compile") == 1


def test_auto_margin_scores_the_chosen_row_on_the_unseen_half():
    # Float right on 190 of 200; 0.03 as right as float (passes at every margin); 0.05 wrong on
    # 40 more images (fails everywhere): every half chooses 0.03, which loses nothing anywhere.
    right = np.arange(200) < 190
    worse = right & (np.arange(200) >= 40)
    rule = frontier.models.default_rule("resnet20")
    seeds = {"0": {"float": _row(right, 1000, 9.0), f"WFN {rule} delta=0.03": _row(right, 30, 3.0),
                   f"WFN {rule} delta=0.05": _row(worse, 20, 2.5)}}
    got = auto_margin.evaluate({"test_images": 200, "seeds": seeds}, "resnet20", np.random.default_rng(0))
    assert got["deltas"] == [0.03, 0.05]
    for margin in auto_margin.MARGINS:
        assert got["margins"][margin] == {"drop": 0.0, "kernel_values": 30.0, "chosen": [1.0, 0.0]}
    # With 0.05 as right as float too, the largest delta wins.
    seeds["0"][f"WFN {rule} delta=0.05"] = _row(right, 20, 2.5)
    got = auto_margin.evaluate({"test_images": 200, "seeds": seeds}, "resnet20", np.random.default_rng(0))
    assert got["margins"][1.0]["chosen"] == [0.0, 1.0] and got["margins"][1.0]["kernel_values"] == 20.0


def _complete(name, seed_index, quick, ablation):
    """Every planned row of one seed and pass, as empty rows (the auto row of today's search)."""
    current = {"search_version": frontier.AUTO_SEARCH_VERSION, "search_rule": frontier.models.default_rule(name)}
    return {label: dict(current) if label == frontier.AUTO_LABEL else {}
            for label, _, _ in frontier._planned_rows(name, seed_index, quick, ablation=ablation)[0]}


def test_pending_seeds_are_those_missing_a_row_of_the_pass():
    seeds = [0, 1, 2]
    per_model = {"seeds": {"0": _complete("cnn", 0, False, ablation=False),
                           "1": _complete("cnn", 1, False, ablation=False)}}
    assert frontier.pending_seeds("cnn", per_model, seeds, False, ablation=False) == [2]
    # Seed 0 lacks its first-seed-only rules; seeds 1 and 2 have none to add in that pass, but
    # seed 2 still lacks every row.
    assert frontier.pending_seeds("cnn", per_model, seeds, False, ablation=True) == [0, 2]
    per_model["seeds"]["0"] = _complete("cnn", 0, False, ablation=True)
    assert frontier.pending_seeds("cnn", per_model, seeds, False, ablation=True) == [2]


def test_each_seed_and_pass_runs_in_a_process_of_its_own_that_shares_the_float_models(tmp_path, monkeypatch):
    json_path = str(tmp_path / "F.json")
    args = frontier.argparse.Namespace(models=["cnn", "mlp"], seeds=2, quick=True, output=str(tmp_path / "F.md"),
                                       float_cache=None, optimizer="fresh")
    # The MLP is complete already (with today's settings, so the checks keep its rows); the CNN
    # has seed 1's rows only.
    results = {"_optimizer": "fresh",
               "cnn": {"seeds": {"1": _complete("cnn", 1, True, ablation=True)}},
               "mlp": {"seeds": {str(s): _complete("mlp", s, True, ablation=True) for s in (0, 1)}}}
    calls = []

    def fake_call(command):
        """A child: measures (here: adds) every row of its seed and pass."""
        flag = dict(zip(command[2::2], command[3::2]))
        calls.append((flag["--models"], int(flag["--only-seed"]), flag["--only-pass"], flag["--float-cache"]))
        with open(json_path) as f:
            saved = json.load(f)
        seed = int(flag["--only-seed"])
        saved[flag["--models"]]["seeds"].setdefault(str(seed), {}).update(
            _complete(flag["--models"], seed, True, ablation=flag["--only-pass"] == "ablation"))
        frontier.save_results(saved, json_path)
        return 0

    monkeypatch.setattr(frontier.subprocess, "call", fake_call)
    monkeypatch.setattr(frontier, "write_report", lambda *a, **k: "")
    out = frontier.measure_in_processes(args, json_path, results)
    # Seed 0 of the CNN in both passes, nothing for the complete MLP; one float cache for all.
    assert [c[:3] for c in calls] == [("cnn", 0, "seeds"), ("cnn", 0, "ablation")]
    assert len({c[3] for c in calls}) == 1
    assert frontier.pending_seeds("cnn", out["cnn"], [0, 1], True, ablation=True) == []

    # A process that fails stops the run with the command to go on.
    del out["cnn"]["seeds"]["1"]
    monkeypatch.setattr(frontier.subprocess, "call", lambda command: 3)
    with pytest.raises(SystemExit, match=r"\[cnn seed 1\] the seeds pass failed \(exit 3\).*rerun"):
        frontier.measure_in_processes(args, json_path, out)


def _readme_results():
    """Two seeds of the photo ResNet-20: lossless at 0.015, a point lost at 0.03 and by tfmot."""
    default = frontier.models.default_rule("resnet20")
    right = np.ones(200, bool)
    two_wrong = right.copy()
    two_wrong[:2] = False
    seed = {"float": _row(right, 1000, 9.0), "tfmot-16": _row(two_wrong, 350, 7.5),
            f"WFN {default} delta=0.015": _row(right, 50, 3.5, default, 0.015, (60, 3.6)),
            f"WFN {default} delta=0.03": _row(two_wrong, 25, 3.0, default, 0.03, (30, 3.1)),
            "WFN paper delta=0.015": _row(two_wrong, 40, 3.4, "paper", 0.015, (45, 3.45))}
    auto = {**_row(right, 50, 3.5), "delta": 0.015,
            "wfn": {"fixable_unique": 40, "fixable_entropy": 3.5}}
    seeds = {"0": {**seed, frontier.AUTO_LABEL: auto}, "1": dict(seed)}
    return {"resnet20": {"title": "t", "test_images": 200, "train_images": 10, "seeds": seeds}}


def test_readme_tables_are_built_from_the_results():
    import frontier_readme

    over = frontier_readme.over_seeds_table(_readme_results())
    assert len(over) == 3 and over[2].startswith("| ResNet-20, photos (2 seeds, float 100.0 ± 0.0%)")
    cells = [c.strip() for c in over[2].split("|")[1:-1]]
    assert cells[1] == "`bounded_third`: 0.015"  # 0.03 loses a point
    assert cells[2] == "0.015: +0.00 ± 0.00; 350 / 50.0 = 7.0x, 7.50 / 3.50 = 2.14x"
    assert cells[3] == "**+1.00 ± 0.50**"  # bold: more than half a point (paired SE of 2 of 200)
    # The auto row ran on seed 0 only: 60 / 40 fixed values, 7.6 / 3.6 bits over all parameters.
    assert cells[4] == "0.015: +0.00 (1 seed); 1.50x, 2.11x"
    rules = frontier_readme.rule_table(_readme_results())
    by_rule = {line.split("|")[1].strip(): line for line in rules[2:]}
    assert "| 60 / 3.60, +0.00 ± 0.00 | not run |" in by_rule[frontier_readme.RULE_LABELS["bounded_third"]]
    assert "| 45 / 3.45, **+1.00 ± 0.50** |" in by_rule["`paper`"]
    assert by_rule["`third`"].count("not run") == len(frontier_readme.RULE_COLUMNS)


def test_the_readme_tables_are_rewritten_between_their_markers_only(tmp_path):
    import frontier_readme

    path = tmp_path / "README.md"
    text = ("intro\n<!-- frontier:over-seeds -->\n| old | table |\n<!-- /frontier:over-seeds -->\n"
            "middle\n<!-- frontier:rules -->\n<!-- /frontier:rules -->\nend\n")
    path.write_text(text)
    assert frontier_readme.update_readme(str(path), _readme_results()) == ["over-seeds", "rules"]
    new = path.read_text()
    assert "| old | table |" not in new and new.startswith("intro\n") and new.endswith("end\n")
    assert "\n".join(frontier_readme.over_seeds_table(_readme_results())) in new
    assert "\n".join(frontier_readme.rule_table(_readme_results())) + "\n<!-- /frontier:rules -->" in new
    frontier_readme.update_readme(str(path), _readme_results())
    assert path.read_text() == new  # idempotent
    bare = tmp_path / "OTHER.md"
    bare.write_text("no markers\n")
    assert frontier_readme.update_readme(str(bare), _readme_results()) == []
    assert bare.read_text() == "no markers\n"


def test_only_the_committed_report_rewrites_the_readme(tmp_path, monkeypatch):
    import frontier_readme

    called = []
    monkeypatch.setattr(frontier_readme, "update_readme", lambda path, results: called.append(path) or [])
    frontier.update_readme(str(tmp_path / "FRONTIER.md"), {})  # a scratch report (the CI's)
    assert called == []
    frontier.update_readme(frontier.DEFAULT_OUTPUT, {})
    assert called == [frontier.README]


def test_a_blocks_ratio_pairs_the_models_medians_of_the_same_block():
    times = {"plain": {"block_medians_ms": [2.0, 4.0, 5.0]},
             "fix_weights": {"block_medians_ms": [3.0, 4.0, 4.0]}}
    assert run.block_ratios(times, "fix_weights") == [1.5, 1.0, 0.8]
    assert run._ratio_range([1.5, 1.0, 0.8]) == "0.80-1.50"
    assert run._ratio_range(None) == "n/a"  # a results file from before the column


def _saved_run(tmp_path, seed=0, quick=False):
    per_model = {"mobilenetv2": {"deltas": [0.0075], "step_steps": 25, "step_rounds": 2}}
    saved = {"quick": quick, "seed": seed, "seconds": 60.0, "compression": [{"model": "cnn"}],
             "steps": [{"model": "cnn", "old": True}, {"model": "resnet20", "old": True}],
             "profile": {"model": "cnn"}, "latency": [],
             "settings": {"step_rounds": 4, "step_steps": 60, "per_model": per_model}}
    (tmp_path / "results.json").write_text(json.dumps(saved))
    return saved


def test_steps_only_replaces_section_3_and_keeps_every_other_section(tmp_path, monkeypatch):
    _saved_run(tmp_path)
    trained, reported = [], []

    def float_model(name, cfg, seed, work, data):
        trained.append((name, seed, len(data[0])))
        return data, os.path.join(work, name), object(), 1, 0.0

    monkeypatch.setattr(run, "trained_float_model", float_model)
    monkeypatch.setattr(run.models, "dataset", lambda name, seed: (np.zeros((10, 1)), None, np.zeros(10), None))
    monkeypatch.setattr(run.models, "save_layer_weights", lambda model, path: None)
    monkeypatch.setattr(run, "measure_steps", lambda cfg, seed, weights: (
        [{"model": n, "weights": weights[n]} for n in cfg["step_models"]], None))
    monkeypatch.setattr(run, "report_only", lambda output, args: reported.append(output) or 0)
    cfg = dict(run.FULL, step_models=["cnn", "mobilenetv2"])
    args = type("Args", (), {"quick": False, "seed": 0})()
    assert run.steps_only(str(tmp_path), args, cfg) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    # The models measured again replace their rows; the others' rows stay as they were.
    assert [(s["model"], "old" in s) for s in saved["steps"]] == [
        ("resnet20", True), ("cnn", False), ("mobilenetv2", False)]
    assert [("measured_alone" in s) for s in saved["steps"]] == [False, True, True]
    # The old profile was of a model measured again, and none was made this time: dropped.
    assert saved["profile"] is None and saved["compression"] == [{"model": "cnn"}]
    # The float models train on the full run's split: the held-out fifth is left out.
    assert trained == [("cnn", 0, 8), ("mobilenetv2", 0, 8)]
    # The step settings are today's; the model's other overrides are the saved run's.
    assert saved["settings"]["step_blocks"] == cfg["step_blocks"] and "step_rounds" not in saved["settings"]
    assert saved["settings"]["step_models"] == ["resnet20", "cnn", "mobilenetv2"]  # the rows it holds
    assert saved["settings"]["per_model"]["mobilenetv2"] == {"deltas": [0.0075], "step_steps": 200}
    assert reported == [str(tmp_path)]


def test_steps_only_refuses_a_missing_or_different_run_and_changes_nothing(tmp_path):
    args = type("Args", (), {"quick": False, "seed": 1})()
    with pytest.raises(SystemExit, match="run `python benchmarks/run.py` once first"):
        run.steps_only(str(tmp_path), args, dict(run.FULL))
    before = _saved_run(tmp_path, seed=0)
    with pytest.raises(SystemExit, match="seed=0"):
        run.steps_only(str(tmp_path), args, dict(run.FULL))
    assert json.loads((tmp_path / "results.json").read_text()) == before


def test_step_timing_alternates_the_models_one_step_at_a_time_with_their_own_callbacks():
    import keras

    import step_timing

    calls, made = [], {}

    class Record(keras.callbacks.Callback):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def on_train_batch_begin(self, batch, logs=None):
            calls.append((self.name, batch))

    def factory(name, width):
        def make():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width), keras.layers.Dense(2)])
            model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
            made[name] = model
            return model, [Record(name)]
        return make

    x, y = np.random.default_rng(0).normal(size=(24, 4)).astype("float32"), np.arange(24) % 2
    out = step_timing.alternating_step_times({"a": factory("a", 3), "b": factory("b", 5)}, x, y,
                                             batch=8, steps=6, blocks=3, warmup_steps=2, base="a")
    assert set(out) == {"a", "b"}
    for times in out.values():
        assert times["n"] == 6 and len(times["block_medians_ms"]) == 3
        assert times["p25_ms"] <= times["median_ms"] <= times["p75_ms"]
    assert "paired_ratio" in out["b"] and "paired_ratio" not in out["a"]
    # Each turn is one training step: 2 warm-up + 6 timed, then the 3 batches of one fit.
    assert [int(m.optimizer.iterations.numpy()) for m in made.values()] == [11, 11]
    stepped, fits = calls[:2 * 8], calls[2 * 8:]
    assert [c[1] for c in stepped] == [s for s in range(8) for _ in "ab"]
    assert [c[0] for c in stepped] == ["a", "b", "b", "a"] * 4  # the order rotates step by step
    assert fits == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    with pytest.raises(ValueError, match="at least blocks"):
        step_timing.alternating_step_times({"a": factory("a", 3)}, x, y, batch=8, steps=2, blocks=3)
    with pytest.raises(ValueError, match="base 'plain' is not one of"):
        step_timing.alternating_step_times({"a": factory("a", 3)}, x, y, batch=8, steps=3, blocks=3,
                                           base="plain")


@pytest.mark.parametrize("other", ["--report-only", "--skip-steps", "--deltas=0.015"])
def test_steps_only_refuses_the_options_it_would_ignore(other, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--steps-only", other, "--output", str(tmp_path)])
    assert exit_info.value.code == 2 and "--steps-only measures section 3 alone" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
