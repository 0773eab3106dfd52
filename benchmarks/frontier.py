"""The compression frontier over seeds: accuracy against unique values per fixing rule, with paired errors.

    python benchmarks/frontier.py                        # benchmarks/FRONTIER.md (+ .json, .png); ResNet-20 alone (three seeds) ~2.8 h on 2 cores
    python benchmarks/frontier.py --models resnet20 mobilenetv2_cifar --seeds 4   # then the photo models' seed 3
    python benchmarks/frontier.py --models mobilenetv2 cnn mlp --seeds 5   # then the digit models' seeds 3-4 (~35 min)
    python benchmarks/frontier.py --float-cache ~/wfn_floats   # the same, keeping the float models for a rerun
    python benchmarks/frontier.py --models cnn --seeds 1 --quick --output /tmp/f.md   # smoke, ~1 min
    python benchmarks/frontier.py --report-only          # rewrite FRONTIER.md from FRONTIER.json

For every model and seed: train the float model (`run.train_float`, the seed sets the
initialisation and the batches), then from the same float weights: int8 post-training
quantization, tfmot `cluster_weights` 16/layer on every seed (tf_keras subprocess,
`run.run_tf_keras`) and WFN under the fixing rules and deltas of `PLAN` (`run.fix_with_wfn`,
``fix_weights(rule=...)``; ``--optimizer``: a fresh optimizer each stage, the library's default, or
the state carried over, as the first runs of this benchmark did). Every row keeps
which test images it got right, so each drop is PAIRED: the float model and the compressed model
are scored on the same images of the same seed. Per seed the standard error of the drop is
``std(c_float - c_row) / sqrt(n)`` over the n test images (c = 1 if right); over S seeds the
mean drop has the error ``sqrt(sum of the seeds' SE^2) / S``, and the spread is the seeds' range.
A row is lossless when its mean drop over the seeds is at most 0.5 points. The rows of every
seed run first, seed by seed; the rules `PLAN` runs on the first seed only come last (a run
stopped part way has the multi-seed rows).

The row ``WFN distance=auto`` runs `tfmot_wfn.search_distance` (`run.auto_distance`) on every
seed. The float model trained on every training image, so the search validates on test images:
a random half of them, drawn per seed (`auto_split`); its row and the float model are then
scored on the other half only, so its drop is paired and no image that chose the distance judges it.
Each auto row records the search's version (`AUTO_SEARCH_VERSION`); a rerun redoes the rows that
an older search measured and the current one could have chosen differently, or that ran under a
rule other than the one ``rule="auto"`` picks for the model today (`stale_auto_row`), and the
report counts those still in the file.

The row ``float fine-tuned`` (`_control_row`, every seed) is the float model fine-tuned exactly
as the WFN rows are, with nothing fixed and no regulariser: what the same training costs without
WFN's constraints (those also hold the weights near the float model's, so a WFN row can lose less
than this row). Like the auto row it
keeps its own float model's right answers, so it stays paired where retraining a float model did
not reproduce the saved one. The fine-tuning lr (`run.FINE_TUNE_LR`) is recorded per model: a
rerun at another lr redoes every row that fine-tunes.

Results are saved after every row (the ``.json`` beside ``--output``), so an interrupted run keeps
what it measured and a rerun skips the rows already there (same model, seed and row). Each model,
seed and pass runs in a process of its own (`measure_in_processes`; ``--in-process``: all in
this one), because TensorFlow keeps every traced graph alive in a process: one process running
every row of the digit MobileNetV2's five seeds grew to 17.8 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import models  # noqa: E402
import run  # noqa: E402  (the shared training / measuring helpers; sets up sys.path)
from paired_stats import LOSSLESS_POINTS, combine_seeds, pack, paired_drop, unpack  # noqa: E402

from rule_ablation import ENTROPY_TARGET as RULE_ENTROPY_TARGET  # noqa: E402
from rule_ablation import SMALL_DELTAS  # noqa: E402
from rule_ablation import VALUES_TARGET as RULE_VALUES_TARGET  # noqa: E402

from tfmot_wfn.core import fixing_rules  # noqa: E402

#: Table and plot order: the rules ``rule="auto"`` picks first, then `fixing_rules.RULES`' order.
_CHOSEN = (fixing_rules.PLAIN_RULE, fixing_rules.DEPTHWISE_RULE)
RULES = _CHOSEN + tuple(r for r in fixing_rules.RULES if r not in _CHOSEN)
#: Issue 12's targets (`targets_table`), on the seeds' means:
#: "The default" of a model is the rule ``rule="auto"`` picks for it (`models.default_rule`).
#: * headline, on HEADLINE_MODELS: the default rule's sparsest lossless row has at least
#:   KERNEL_VALUES_TARGET times fewer unique kernel values and ENTROPY_TARGET times lower kernel
#:   entropy than tfmot 16/layer;
#: * rule, on RULE_MODELS (and on rule_ablation.py's pools): at SMALL_DELTAS the default is within
#:   RULE_VALUES_TARGET / RULE_ENTROPY_TARGET of the paper rule's fixed values / entropy; at the
#:   larger deltas it loses no more than BEFORE_RULE (0.1's default), or is lossless;
#: * no collapse, on COLLAPSE_MODELS at every delta: the default's drop is within
#:   COLLAPSE_SE paired standard errors of the float model, or lossless.
KERNEL_VALUES_TARGET, ENTROPY_TARGET = 5.0, 1.5
HEADLINE_MODELS, RULE_MODELS = ("resnet20", "mobilenetv2_cifar", "mobilenetv2"), ("resnet20",)
COLLAPSE_MODELS, COLLAPSE_SE = ("mobilenetv2_cifar", "mobilenetv2"), 2.0
BEFORE_RULE = fixing_rules.LEGACY_DEFAULT_RULE
#: The row of `tfmot_wfn.search_distance` (`_auto_row`), on every seed; its targets
#: (`auto_targets`): lossless, >= AUTO_VALUES_TARGET times fewer fixed unique values than the
#: default rule at AUTO_DEFAULT_DELTA, >= AUTO_ENTROPY_TARGET times lower entropy than tfmot
#: 16/layer (all stored parameters), at most AUTO_TIME_TARGET times one fixing run's time.
AUTO_LABEL, AUTO_SPLIT_SEED = "WFN distance=auto", 1000
#: How `search_distance` chooses, recorded in every auto row (rows without it: version 1).
#: 1: after a failed full run the walk stepped down one delta at a time, and when the budget ran
#:    out with no run within tolerance it returned the most accurate one (the photo ResNet-20,
#:    3 seeds of 3, ended outside tolerance that way).
#: 2: while no full run has passed, the last affordable one goes to the smallest delta.
#: 3: a full run passes when its drop plus one paired standard error is within tolerance
#:    (``margin_se=1``), and when none passes the best accuracy less one SE is returned.
AUTO_SEARCH_VERSION = 3
#: The control row (`_control_row`): the float model fine-tuned as a WFN row is, nothing fixed.
CONTROL_LABEL = "float fine-tuned"
#: Rows that keep which test images their own float model got right (``float_correct``), so they
#: stay paired where retraining did not reproduce the seed's saved float model.
SELF_PAIRED = (AUTO_LABEL, CONTROL_LABEL)
AUTO_DEFAULT_DELTA = 0.015
AUTO_VALUES_TARGET, AUTO_ENTROPY_TARGET, AUTO_TIME_TARGET = (
    run.TARGET_AUTO_UNIQUE, run.TARGET_AUTO_ENTROPY, run.TARGET_AUTO_TIME)
#: model -> (deltas, rules on every seed, rules on the first seed only, epochs per stage)
PLAN = {
    "resnet20": ((0.0075, 0.015, 0.03), ("bounded_third", "paper", "nearest_capped"), ("late_third", "third", "capped", "bounded", "nearest"), 1),
    "mobilenetv2_cifar": ((0.015, 0.03), ("late_third", "bounded_third", "third", "nearest_capped", "capped", "gentle"), ("paper", "bounded"), 1),
    "cnn": ((0.015, 0.03, 0.05, 0.065, 0.08), ("late_third", "bounded_third", "third", "nearest_capped", "capped", "paper"), ("bounded", "nearest"), 2),
    "mlp": ((0.015, 0.03, 0.05, 0.065, 0.08), ("late_third", "bounded_third", "third", "nearest_capped", "capped", "paper"), ("bounded", "nearest"), 2),
    "mobilenetv2": ((0.005, 0.0075, 0.015), ("late_third", "bounded_third", "third", "nearest_capped", "gentle"), ("capped", "paper"), 1),
}
#: ``--optimizer``: how `UpdateFixingStep` treats the optimizer between stages. A results file
#: records its choice; WFN rows measured under the other one are not reused (the float, int8 and
#: tfmot rows do not depend on it). Peers (tfmot) run on every seed.
OPTIMIZERS = {"fresh": {"fresh_optimizer": True}, "carried": {"fresh_optimizer": False}}
#: Results files written before ``--optimizer`` existed carried the state over.
OPTIMIZER_BEFORE = "carried"
DEFAULT_MODELS = ("resnet20", "mobilenetv2_cifar", "cnn", "mlp", "mobilenetv2")
#: The committed report; writing it also rewrites README's tables of it (`update_readme`).
DEFAULT_OUTPUT = os.path.join(HERE, "FRONTIER.md")
README = os.path.join(os.path.dirname(HERE), "README.md")


# ------------------------------------------------------------------------------------ measuring
def _int8_row(base, data, folder) -> Dict:
    from tfmot_wfn import lite

    _, x_test, _, y_test = data
    path = os.path.join(folder, "int8.tflite")
    run.int8_ptq(base, data[0], path)
    got = lite.run_interpreter(lite.load_interpreter(path, decode=False, num_threads=1), x_test)
    correct = np.argmax(got, -1) == y_test
    row = {"accuracy": float(correct.mean()), "correct": pack(correct)}
    row.update(run.tflite_value_stats(path))
    return row


def _planned_rows(name: str, seed_index: int, quick: bool, ablation: bool = True):
    """The rows of seed number `seed_index`: peers, every-seed rules, the auto row, and (when
    `ablation` and it is the first seed) the first-seed-only rules; `quick`: no tfmot row and
    the first delta only."""
    deltas, rules, first_only, eps = PLAN[name]
    rows = [("float", None, None), ("int8 PTQ", None, None)]
    if not quick:
        rows.append(("tfmot-16", None, None))
    rows.append((CONTROL_LABEL, None, None))
    use = list(rules) + (list(first_only) if seed_index == 0 and ablation else [])
    for delta in deltas[:1] if quick else deltas:
        rows += [(f"WFN {rule} delta={delta:g}", rule, delta) for rule in use]
    rows.append((AUTO_LABEL, None, None))
    return rows, eps


def auto_split(n: int, seed: int):
    """The test images of seed ``seed`` split in two halves, (validate, measure) masks: the
    search chooses on the first half, its row is scored on the second (the float model too, so
    the drop stays paired); each seed draws its own halves."""
    validate = np.zeros(n, bool)
    validate[np.random.default_rng(AUTO_SPLIT_SEED + seed).permutation(n)[: n // 2]] = True
    return validate, ~validate


def _auto_row(name: str, base, data, eps: int, seed: int, float_row: Dict, own_float: bool) -> Dict:
    """`run.auto_distance` (``search_distance``, tolerance `run.AUTO_TOLERANCE`, budget 3) on
    the seed's training images, validated on half its test images (`auto_split`); the row's
    accuracy is that of the other half, and ``measured`` says which images those are. The row
    keeps which test images its float model ``base`` got right (``float_correct``): its drop is
    paired with that model, also where retraining did not reproduce the seed's saved float
    model (``own_float``; the other rows stay paired with the saved one)."""
    _, x_test, _, y_test = data
    validate, measure = auto_split(len(y_test), seed)
    final, seconds, info = run.auto_distance(name, base, data, (x_test[validate], y_test[validate]),
                                             eps, seed, run.FINE_TUNE_LR[name])
    row = run.scored_row(final, data)
    correct = unpack(row["correct"], len(y_test))
    row.update(accuracy=float(correct[measure].mean()), measured=pack(measure),
               delta=info["distance"], wfn=info, search_seconds=seconds,
               float_correct=float_row["correct"], own_float=bool(own_float),
               search_version=AUTO_SEARCH_VERSION, search_rule=models.default_rule(name))
    return row


def _control_row(name: str, base, data, eps: int, seed: int, float_row: Dict, own_float: bool,
                 optimizer: str) -> Dict:
    """`run.fine_tune_alone`: ``base`` fine-tuned exactly as the seed's WFN rows are, with
    nothing fixed and no regulariser, so that each WFN drop can be read against what the same
    training costs without WFN's constraints.
    Paired with its own float model ``base`` (``float_correct``), as `_auto_row` is."""
    model, seconds = run.fine_tune_alone(name, base, data, eps, seed, run.FINE_TUNE_LR[name],
                                         **OPTIMIZERS[optimizer])
    return {**run.scored_row(model, data), "fine_tune_seconds": seconds,
            "float_correct": float_row["correct"], "own_float": bool(own_float)}


def record_float_training(per_model: Dict, trained: Dict) -> bool:
    """Record how the model's float models train (``trained``: epochs, lr, augment); when a
    results file recorded other settings, drop its seeds (their rows are not paired with
    the new float models) and return True. A file without the record predates it: kept."""
    changed = per_model.setdefault("float_training", trained) != trained
    if changed:
        per_model["seeds"] = {}
    per_model["float_training"] = trained
    return changed


#: Rows that do not depend on the fine-tuning settings (`record_fine_tuning`).
UNTUNED_ROWS = ("float", "int8 PTQ")


def _drop_rows(per_model: Dict, drop) -> None:
    """Delete every seed's rows whose label ``drop(label)`` is true."""
    for rows in per_model["seeds"].values():
        for label in [k for k in rows if drop(k)]:
            del rows[label]


def auto_search_version(row: Dict) -> int:
    """The `AUTO_SEARCH_VERSION` that measured an auto row (1 for rows written before the record)."""
    return int(row.get("search_version", 1))


def auto_rule(name: str, row: Dict) -> str:
    """The fixing rule an auto row of model `name` ran under (``search_rule``: not ``rule``,
    which marks the rows of one rule at one delta). Rows written before the record ran under the
    defaults of then: `late_third` for the depthwise models, `bounded_third` for the others."""
    depthwise = models.MODELS[name].get("depthwise", False)
    return row.get("search_rule", "late_third" if depthwise else "bounded_third")


def stale_auto_row(row: Dict, name: str) -> bool:
    """Whether an auto row of model `name` is out of date: it comes from an older search whose
    choice the current one could change (every row before version 3: they judged each run on its
    drop alone, version 3 on its drop plus one paired standard error, which older rows did not
    all record), or it ran under another rule than ``rule="auto"`` picks for `name` today."""
    return (auto_search_version(row) < AUTO_SEARCH_VERSION
            or auto_rule(name, row) != models.default_rule(name))


def drop_stale_auto_rows(name: str, per_model: Dict, seeds: Optional[List[int]] = None) -> int:
    """Delete model `name`'s `stale_auto_row` auto rows of ``seeds`` (all seeds: None), which a
    rerun measures again; the number deleted."""
    stale = [rows for seed, rows in per_model["seeds"].items()
             if (seeds is None or int(seed) in seeds) and AUTO_LABEL in rows
             and stale_auto_row(rows[AUTO_LABEL], name)]
    for rows in stale:
        del rows[AUTO_LABEL]
    return len(stale)


def fine_tuning(name: str) -> Dict:
    """How model ``name``'s rows fine-tune today: ``lr`` (`run.FINE_TUNE_LR`) and, for models
    whose spec says ``augment``, ``augment: True`` (`run.fine_tune_inputs`; the key is left out
    otherwise, so that the records of the models that fine-tune on plain images still match)."""
    tuning = {"lr": run.FINE_TUNE_LR[name]}
    if models.MODELS[name].get("augment"):
        tuning["augment"] = True
    return tuning


def record_fine_tuning(per_model: Dict, tuning: Dict) -> bool:
    """Record how the model's rows fine-tune (``tuning``: `fine_tuning`); when a
    results file recorded other settings, drop every row that fine-tunes (WFN, tfmot, the
    control; the float and int8 rows stay) and return True. A file without the record: kept."""
    changed = per_model.setdefault("fine_tuning", tuning) != tuning
    if changed:
        _drop_rows(per_model, lambda label: label not in UNTUNED_ROWS)
    per_model["fine_tuning"] = tuning
    return changed


def refresh_model(name: str, per_model: Dict, quick: bool, seeds: List[int]) -> None:
    """Clear model `name`'s rows that today's settings would measure differently: every seed
    when its float training changed, every fine-tuned row when the fine-tuning changed, the
    `stale_auto_row` auto rows of ``seeds``. Idempotent: a second call changes nothing."""
    spec = models.MODELS[name]
    trained = {"epochs": 2 if quick else spec["float_epochs"], "lr": spec["float_lr"],
               "augment": bool(spec.get("augment", False))}
    if record_float_training(per_model, trained):
        run.say(f"[{name}] the float training changed to {trained}: redoing every seed")
    tuning = fine_tuning(name)
    if record_fine_tuning(per_model, tuning):
        run.say(f"[{name}] the fine-tuning changed to {tuning}: redoing every row that fine-tunes")
    if drop_stale_auto_rows(name, per_model, seeds):
        run.say(f"[{name}] redoing the auto rows of an older distance search than version "
                f"{AUTO_SEARCH_VERSION} or of another rule than {models.default_rule(name)}")


#: The two passes over the seeds (`measure_model`): every seed's rows, then the first seed's
#: first-seed-only ablation rules.
PASSES = {"seeds": False, "ablation": True}


def _pass_done(name: str, index: int, done: Dict, quick: bool, ablation: bool) -> bool:
    """Whether seed number ``index``'s rows of one pass (``ablation``: the whole plan, else every
    seed's rows) are all in ``done``."""
    return all(label in done for label, _, _ in _planned_rows(name, index, quick, ablation=ablation)[0])


def pending_seeds(name: str, per_model: Dict, seeds: List[int], quick: bool, ablation: bool) -> List[int]:
    """The seeds whose rows of one pass are not all in ``per_model`` (`_pass_done`)."""
    return [seed for index, seed in enumerate(seeds)
            if not _pass_done(name, index, per_model["seeds"].get(str(seed), {}), quick, ablation)]


def measure_model(name: str, seeds: List[int], results: Dict, save, quick: bool,
                  float_cache: Optional[str] = None, optimizer: str = "fresh",
                  only_seed: Optional[int] = None, passes=tuple(PASSES.values())) -> None:
    """Measures model `name`'s missing rows on ``seeds`` (only ``only_seed`` of them when given;
    its place in ``seeds`` still says whether it is the first seed), in the ``passes`` given
    (`PASSES`' values), saving after every row."""
    data = models.dataset(name, 0)
    spec = models.MODELS[name]
    per_model = results.setdefault(name, {"title": spec["title"], "test_images": int(len(data[1])),
                                          "train_images": int(len(data[0])), "seeds": {}})
    refresh_model(name, per_model, quick, seeds)
    # Two passes: every seed's rows first (the headline needs all seeds), then the first seed's
    # ablation rows, so that a run stopped part way has the multi-seed rows. The first seed's float
    # model is kept for the second pass: retraining it need not reproduce it.
    first_float = None  # the first seed's (base, float row, own_float), for the second pass
    for ablation in passes:
        for index, seed in enumerate(seeds):
            if only_seed is not None and seed != only_seed:
                continue
            done = per_model["seeds"].setdefault(str(seed), {})
            if _pass_done(name, index, done, quick, ablation):
                continue
            whole, eps = _planned_rows(name, index, quick)
            planned = whole if ablation else _planned_rows(name, index, quick, ablation=False)[0]
            eps = 1 if quick else eps
            if index == 0 and first_float is not None:
                got = first_float
            else:
                # Judged on the seed's whole plan: a new float model pairs with no saved row.
                got = _float_for_seed(name, data, spec, seed, done, whole, quick, float_cache)
                save()
                if index == 0:
                    first_float = got
            base, float_row, own_float = got
            _measure_rows(name, base, data, planned, done, eps, seed, float_row, own_float,
                          optimizer, save)


def _child_command(args, name: str, seed: int, pass_name: str, float_cache: str) -> List[str]:
    """The command that measures one model, seed and pass in a process of its own."""
    return [sys.executable, os.path.abspath(__file__), "--models", name, "--seeds", str(args.seeds),
            "--only-seed", str(seed), "--only-pass", pass_name, "--output", args.output,
            "--float-cache", float_cache, "--optimizer", args.optimizer] + (["--quick"] if args.quick else [])


def save_results(results: Dict, json_path: str) -> None:
    """Write ``results`` to ``json_path`` atomically (a crash leaves the previous file)."""
    tmp = json_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f)
    os.replace(tmp, json_path)


def measure_in_processes(args, json_path: str, results: Dict) -> Dict:
    """Every model, pass and seed with rows missing measured in a process of its own (TensorFlow
    keeps every traced graph alive in a process, so one process for every row grows by tens to
    hundreds of MB a row: benchmarks/README). The processes share the float models through
    ``--float-cache`` (a temporary folder when none is given), so that the first seed's float
    model is the same in both passes. ``results`` are saved first (the processes read them);
    returns them as the processes left them."""
    save_results(results, json_path)
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory(prefix="wfn_frontier_floats_") as scratch:
        cache = args.float_cache or scratch
        for name in args.models:
            if name in results:  # the same checks as the processes, said once here
                refresh_model(name, results[name], args.quick, seeds)
                save_results(results, json_path)
            for pass_name, ablation in PASSES.items():
                todo = pending_seeds(name, results[name], seeds, args.quick, ablation) if name in results else seeds
                for seed in todo:
                    code = subprocess.call(_child_command(args, name, seed, pass_name, cache))
                    if code != 0:
                        raise SystemExit(f"[{name} seed {seed}] the {pass_name} pass failed (exit "
                                         f"{code}); the rows measured so far are in {json_path}: "
                                         "rerun the same command to go on")
                    with open(json_path) as f:
                        results = json.load(f)
            write_report(results, args.output, None)
    return results


def _float_for_seed(name, data, spec, seed, done, planned, quick, float_cache):
    """Seed `seed`'s float model (trained, or from `float_cache`), its scored row, and whether
    it differs from the saved float row while only `SELF_PAIRED` rows are missing (``own_float``);
    where it differs and other rows are missing, the seed's saved rows are cleared."""
    epochs = 2 if quick else spec["float_epochs"]
    base, seconds = run.cached_float_model(name, data, epochs, seed, float_cache)
    if seconds is None:  # from the cache: keep the training time measured with it
        seconds = done.get("float", {}).get("seconds")
    float_row = {**run.scored_row(base, data), "seconds": seconds}
    own_float = False
    if "float" in done and done["float"]["correct"] != float_row["correct"]:
        # Retraining did not reproduce the float model: earlier rows are not paired with it.
        if all(label in SELF_PAIRED for label, _, _ in planned if label not in done):
            # Only rows that keep their own float model are missing (`_auto_row`, `_control_row`).
            run.say(f"[{name} seed {seed}] float model differs from the saved one: the "
                    "missing rows are paired with the new one")
            own_float = True
        else:
            run.say(f"[{name} seed {seed}] float model differs from the saved one: redoing the seed")
            done.clear()
    if not own_float:
        done["float"] = float_row
    return base, float_row, own_float


def _measure_rows(name, base, data, planned, done, eps, seed, float_row, own_float, optimizer,
                  save) -> None:
    """Measures the rows of `planned` missing from `done` (saving after each)."""
    import keras

    with tempfile.TemporaryDirectory(prefix="wfn_frontier_") as folder:
        weights = os.path.join(folder, "float.npz")
        models.save_layer_weights(base, weights)
        data_in = run.save_data(data, folder)
        for label, rule, delta in planned:
            if label in done and label != "float":
                continue
            start = time.perf_counter()
            if label == "int8 PTQ":
                row = _int8_row(base, data, folder)
            elif label == "tfmot-16":
                out = os.path.join(folder, "tfmot16.npz")
                run.run_tf_keras({"mode": "cluster", "model": name, "weights_in": weights,
                                  "data_in": data_in,
                                  "weights_out": out, "clusters": 16,
                                  "epochs": run.fine_tune_epochs(eps), "lr": run.FINE_TUNE_LR[name],
                                  "clipnorm": run.CLIPNORM, "seed": seed})
                clustered = models.build(name, keras)
                models.load_layer_weights(clustered, out)
                row = run.scored_row(clustered, data)
            elif label == AUTO_LABEL:
                row = _auto_row(name, base, data, eps, seed, float_row, own_float)
            elif label == CONTROL_LABEL:
                row = _control_row(name, base, data, eps, seed, float_row, own_float, optimizer)
            elif rule is not None:
                final, _, info = run.fix_with_wfn(name, base, data, delta, eps, seed,
                                                  run.FINE_TUNE_LR[name], rule=rule,
                                                  callback_kwargs=OPTIMIZERS[optimizer])
                row = {**run.scored_row(final, data), "rule": rule, "delta": delta, "wfn": info}
            else:
                continue
            row["seconds"] = time.perf_counter() - start
            done[label] = row
            run.say(f"[{name} seed {seed}] {label:<32s} acc {row['accuracy']:.4f} "
                    f"unique {row['unique_all']} H {row['entropy_all']:.2f} {row['seconds']:.0f}s")
            save()


# ------------------------------------------------------------------------------------ report
def summarise(per_model: Dict) -> List[Dict]:
    """One dict per row label: accuracy mean/std, paired drop over seeds, unique/entropy means."""
    n = per_model["test_images"]
    first: Dict[str, Dict] = {}  # label -> its row on the first seed that has it
    for rows in per_model["seeds"].values():
        for label, row in rows.items():
            first.setdefault(label, row)
    seen = {label: i for i, label in enumerate(first)}

    def order(label):  # peers as measured, then WFN rows by delta and rule (RULES' order)
        rule = first[label].get("rule")
        if label == AUTO_LABEL:
            return (2, 0.0, 0)
        if rule is None:
            return (0, 0.0, seen[label])
        return (1, first[label]["delta"], RULES.index(rule) if rule in RULES else len(RULES))

    labels = sorted(first, key=order)
    out = []
    for label in labels:
        accs, drops, errors, uniq, uniq_k, ent, ent_k, fixable = [], [], [], [], [], [], [], []
        for rows in per_model["seeds"].values():
            if label not in rows or "float" not in rows:
                continue
            row = rows[label]
            accs.append(row["accuracy"])
            # A row scored on part of the test images (`_auto_row`): the float model on the same part.
            part = unpack(row["measured"], n) if "measured" in row else np.ones(n, bool)
            float_correct = row.get("float_correct", rows["float"]["correct"])  # SELF_PAIRED rows' own
            drop, se = paired_drop(unpack(float_correct, n)[part], unpack(row["correct"], n)[part])
            drops.append(drop)
            errors.append(se)
            uniq.append(row["unique_all"])
            uniq_k.append(row["unique_kernels"])
            ent.append(row["entropy_all"])
            ent_k.append(row["entropy_kernels"])
            if "wfn" in row:
                fixable.append((row["wfn"]["fixable_unique"], row["wfn"]["fixable_entropy"]))
        if not accs:
            continue
        out.append({"label": label, "rule": first[label].get("rule"), "delta": first[label].get("delta"),
                    "accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
                    **combine_seeds(drops, errors), "unique": float(np.mean(uniq)),
                    "unique_min": int(np.min(uniq)), "unique_max": int(np.max(uniq)),
                    "unique_kernels": float(np.mean(uniq_k)), "entropy": float(np.mean(ent)),
                    "entropy_kernels": float(np.mean(ent_k)),
                    "fixed_unique": float(np.mean([f[0] for f in fixable])) if fixable else None,
                    "fixed_entropy": float(np.mean([f[1] for f in fixable])) if fixable else None})
    return out


def float_training_note(name: str, per_model: Dict) -> str:
    """`` Float models: ...`` from the model's recorded float training ("" when none)."""
    trained = per_model.get("float_training")
    tuning = per_model.get("fine_tuning")
    images = ("augmented images (a new crop and flip of each image every epoch)"
              if tuning and tuning.get("augment") else "un-augmented images")
    tuned = (f" Fine-tuning (WFN, tfmot, `{CONTROL_LABEL}`): Adam({tuning['lr']:g}), {images}."
             if tuning else "")
    if not trained:
        return tuned
    cosine = ", cosine decay" if run.uses_cosine(name) else ""
    augment = ", on augmented images (reflect-pad 4, random crop, flip)" if trained["augment"] else ""
    return f" Float models: {trained['epochs']} epochs Adam({trained['lr']:g}{cosine}){augment}.{tuned}"


def model_table(name: str, per_model: Dict) -> List[str]:
    rows = summarise(per_model)
    lines = [f"### {name}: {per_model['title']}", "",
             f"{per_model['train_images']:,} training / {per_model['test_images']:,} test images "
             f"(one test image = {100 / per_model['test_images']:.2f} points).{float_training_note(name, per_model)}",
             "",
             "| row | seeds | accuracy % (mean ± std) | drop, points (mean ± paired SE) [seed range] | "
             "lossless | unique values, all stored (mean [range]) | kernels only | entropy bits |",
             "|---|---:|---|---|---|---|---:|---:|"]
    for r in rows:
        lossless = "-" if r["label"] == "float" else ("yes" if r["drop"] <= LOSSLESS_POINTS else "no")
        drop = "-" if r["label"] == "float" else (
            f"{r['drop']:+.2f} ± {r['se']:.2f} [{r['min']:+.2f}, {r['max']:+.2f}]")
        lines.append(f"| {r['label']} | {r['seeds']} | {100 * r['accuracy']:.2f} ± "
                     f"{100 * r['accuracy_std']:.2f} | {drop} | {lossless} | {r['unique']:,.1f} "
                     f"[{r['unique_min']:,}, {r['unique_max']:,}] | {r['unique_kernels']:,.1f} | "
                     f"{r['entropy']:.2f} |")
    return lines + [""]


def ablation_table(results: Dict) -> List[str]:
    """Rule / paper ratios of unique values and entropy, and each rule's drop, per model and delta."""
    lines = ["## Fixing-rule ablation", "",
             "Same float weights per seed, same fine-tuning; only `fix_weights(rule=...)` differs. "
             "Unique values and entropy over the FIXED parameters (kernels, biases, BatchNorm "
             "gamma/beta: `tfmot_wfn.report`), so BatchNorm moving statistics do not hide the "
             "difference; unique / paper and entropy / paper: the rule's mean over the seeds it ran "
             "on against the paper rule's mean over those of them where the paper rule ran (the "
             "paper rule usually fixes the fewest values). "
             "The rules are `tfmot_wfn.core.fixing_rules.RULES` (README's rule table); `gentle` "
             f"(`late_third` with no stage's distance above {fixing_rules.REACH:g} x delta) runs on the MobileNetV2s "
             "only, the models whose loss it targets.", "",
             "| model | delta | rule | seeds | drop, points (± paired SE) | fixed unique values | "
             "unique / paper | entropy bits | entropy / paper |",
             "|---|---:|---|---:|---|---:|---:|---:|---:|"]
    for name, per_model in results.items():
        rows = [r for r in summarise(per_model) if r["rule"]]
        for delta in sorted({r["delta"] for r in rows}):
            at = {r["rule"]: r for r in rows if r["delta"] == delta}
            for rule in RULES:
                r = at.get(rule)
                if r is None:
                    continue
                paper = _paper_on_same_seeds(per_model, rule, delta)
                ratio_u = f"{r['fixed_unique'] / paper['fixed_unique']:.2f}x" if paper else "-"
                ratio_h = f"{r['fixed_entropy'] / paper['fixed_entropy']:.3f}x" if paper else "-"
                lines.append(f"| {name} | {delta:g} | {rule} | {r['seeds']} | {r['drop']:+.2f} ± "
                             f"{r['se']:.2f} | {r['fixed_unique']:,.1f} | {ratio_u} | "
                             f"{r['fixed_entropy']:.2f} | {ratio_h} |")
    return lines + [""]


def _paper_on_same_seeds(per_model: Dict, rule: str, delta: float) -> Optional[Dict]:
    """The paper rule's summary at `delta` over the seeds where `rule` ran (None: on none)."""
    label = f"WFN {rule} delta={delta:g}"
    seeds = {s: rows for s, rows in per_model["seeds"].items()
             if label in rows and f"WFN paper delta={delta:g}" in rows}
    if not seeds:
        return None
    summary = summarise({**per_model, "seeds": seeds})
    return next((r for r in summary if r["rule"] == "paper" and r["delta"] == delta), None)


def _ratio_line(name: str, what: str, measured: str, met: bool) -> str:
    return f"| {name}: {what} | {measured} | {'yes' if met else '**no**'} |"


def targets_table(results: Dict) -> List[str]:
    """Issue 12's targets, judged on the seeds' means, for each model's default rule (the one
    ``rule="auto"`` picks): its best lossless row against tfmot 16/layer, the rule against the
    paper's (small deltas) and against the 0.1 default `BEFORE_RULE` (larger deltas), and no
    collapse on `COLLAPSE_MODELS` at every delta."""
    lines = ["## Targets", "",
             "Judged on the means over the seeds; WFN rows use the rule that `fix_weights`' default "
             f"(`rule=\"auto\"`) picks for the model (`{fixing_rules.DEPTHWISE_RULE}` for the "
             f"MobileNetV2s, which have depthwise convolutions, `{fixing_rules.PLAIN_RULE}` for the "
             "others) and count "
             "only when they ran on every seed. Kernels: Conv/DepthwiseConv/Dense kernels (both methods "
             "store BatchNorm moving statistics as float; tfmot clusters kernels only). Rule ratios: "
             "fixed parameters (kernels, biases, BatchNorm gamma/beta), as in the ablation below.", "",
             "| target | measured | met? |", "|---|---|---|"]
    for name, per_model in results.items():
        default = models.default_rule(name)
        rows = summarise(per_model)
        every = len(per_model["seeds"])
        at = {(r["rule"], r["delta"]): r for r in rows if r["rule"] and r["seeds"] == every}
        tfmot = next((r for r in rows if r["label"] == "tfmot-16"), None)
        mine = sorted((r for (rule, _), r in at.items() if rule == default), key=lambda r: r["delta"])
        if name in HEADLINE_MODELS and tfmot is not None and mine:
            what = (f"a lossless `{default}` row with >= {KERNEL_VALUES_TARGET:g}x fewer unique kernel "
                    f"values and >= {ENTROPY_TARGET:g}x lower kernel entropy than tfmot 16/layer")
            lossless = [r for r in mine if r["drop"] <= LOSSLESS_POINTS]
            if lossless:
                best = min(lossless, key=lambda r: r["unique_kernels"])
                values = tfmot["unique_kernels"] / best["unique_kernels"]
                entropy = tfmot["entropy_kernels"] / best["entropy_kernels"]
                measured = (f"delta {best['delta']:g}, {best['drop']:+.2f} ± {best['se']:.2f} points "
                            f"[seeds {best['min']:+.2f}, {best['max']:+.2f}] "
                            f"(tfmot {tfmot['drop']:+.2f}): kernel values {tfmot['unique_kernels']:,.0f} / "
                            f"{best['unique_kernels']:,.1f} = {values:.1f}x, entropy "
                            f"{tfmot['entropy_kernels']:.2f} / {best['entropy_kernels']:.2f} = "
                            f"{entropy:.2f}x; all stored: {tfmot['unique']:,.0f} / {best['unique']:,.0f} "
                            f"values, {tfmot['entropy']:.2f} / {best['entropy']:.2f} bits")
                met = values >= KERNEL_VALUES_TARGET and entropy >= ENTROPY_TARGET
            else:
                measured, met = ("no lossless row (" + ", ".join(
                    f"delta {r['delta']:g}: {r['drop']:+.2f} [seeds {r['min']:+.2f}, {r['max']:+.2f}]"
                    for r in mine) + ")"), False
            lines.append(_ratio_line(name, what, measured, met))
        for r in mine:
            delta = r["delta"]
            if delta in SMALL_DELTAS and name in RULE_MODELS and ("paper", delta) in at:
                paper = at[("paper", delta)]
                values = r["fixed_unique"] / paper["fixed_unique"]
                entropy = r["fixed_entropy"] / paper["fixed_entropy"]
                lines.append(_ratio_line(
                    name, f"delta {delta:g}: fixed values within {RULE_VALUES_TARGET:.2f}x and entropy "
                    f"within {RULE_ENTROPY_TARGET:.2f}x of the paper's rule",
                    f"{r['fixed_unique']:.1f} / {paper['fixed_unique']:.1f} = {values:.2f}x, "
                    f"{r['fixed_entropy']:.3f} / {paper['fixed_entropy']:.3f} = {entropy:.3f}x "
                    f"(drops {r['drop']:+.2f} / {paper['drop']:+.2f})",
                    values <= RULE_VALUES_TARGET and entropy <= RULE_ENTROPY_TARGET))
            elif delta > max(SMALL_DELTAS) and (BEFORE_RULE, delta) in at:
                before = at[(BEFORE_RULE, delta)]
                lines.append(_ratio_line(
                    name, f"delta {delta:g}: no more loss than `{BEFORE_RULE}` (or lossless)",
                    f"{r['drop']:+.2f} ± {r['se']:.2f} vs {before['drop']:+.2f} ± {before['se']:.2f}",
                    r["drop"] <= max(before["drop"], LOSSLESS_POINTS)))
            if name in COLLAPSE_MODELS:
                others = ", ".join(f"`{rule}` {at[(rule, delta)]['drop']:+.2f}"
                                   for rule in (fixing_rules.LEGACY_DEFAULT_RULE, *_CHOSEN, "paper")
                                   if rule != default and (rule, delta) in at)
                lines.append(_ratio_line(
                    name, f"delta {delta:g}: no collapse (drop within {COLLAPSE_SE:g} paired SE of the "
                    "float model, or lossless)",
                    f"{r['drop']:+.2f} ± {r['se']:.2f}" + (f" (same seeds: {others})" if others else ""),
                    r["drop"] <= max(COLLAPSE_SE * r["se"], LOSSLESS_POINTS)))
        lines += auto_targets(name, per_model, rows)
    return lines + [""]


def auto_compared(name: str, per_model: Dict) -> Optional[Dict]:
    """The `AUTO_LABEL` row against what it is compared with, on every seed that has it and the
    default rule's `AUTO_DEFAULT_DELTA` row: ``seeds`` (their rows), ``default`` (that row's
    label), mean fixed values ``default_values`` / ``auto_values`` and, when every such seed has
    tfmot-16, mean entropies ``h_tfmot`` / ``h_auto`` (all stored parameters) and ``k_tfmot`` /
    ``k_auto`` (kernels); None without such a seed."""
    default = f"WFN {models.default_rule(name)} delta={AUTO_DEFAULT_DELTA:g}"
    seeds = [r for r in per_model["seeds"].values() if AUTO_LABEL in r and default in r and "float" in r]
    if not seeds:
        return None
    out = {"seeds": seeds, "default": default,
           "default_values": float(np.mean([r[default]["wfn"]["fixable_unique"] for r in seeds])),
           "auto_values": float(np.mean([r[AUTO_LABEL]["wfn"]["fixable_unique"] for r in seeds]))}
    if all("tfmot-16" in r for r in seeds):
        for key, field in (("h", "entropy_all"), ("k", "entropy_kernels")):
            out[f"{key}_tfmot"] = float(np.mean([r["tfmot-16"][field] for r in seeds]))
            out[f"{key}_auto"] = float(np.mean([r[AUTO_LABEL][field] for r in seeds]))
    return out


def auto_targets(name: str, per_model: Dict, rows: List[Dict]) -> List[str]:
    """The `AUTO_LABEL` row's targets on the seeds of `auto_compared` (the default rule at
    `AUTO_DEFAULT_DELTA`, tfmot 16/layer; the same seeds)."""
    compared = auto_compared(name, per_model)
    if compared is None:
        return []
    seeds, default = compared["seeds"], compared["default"]
    n = per_model["test_images"]
    auto = next(r for r in rows if r["label"] == AUTO_LABEL)
    chosen = ", ".join(f"{r[AUTO_LABEL]['delta']:g}" for r in seeds)
    default_values, auto_values = compared["default_values"], compared["auto_values"]
    values = default_values / max(auto_values, 1e-9)
    lossless = auto["drop"] <= LOSSLESS_POINTS
    half = int(unpack(seeds[0][AUTO_LABEL]["measured"], n).sum())
    own = sum(bool(r[AUTO_LABEL].get("own_float")) for r in seeds)
    own = (f" ({own} of them against a retrained float model: retraining did not reproduce the "
           "saved one)") if own else ""
    versions = [auto_search_version(r[AUTO_LABEL]) for r in seeds]
    old = [v for v in versions if v < AUTO_SEARCH_VERSION]
    if old:
        own += (f"; {len(old)} of {len(seeds)} measured by an older search (version "
                f"{', '.join(str(v) for v in sorted(set(old)))}) that version {AUTO_SEARCH_VERSION} "
                "could choose differently: a rerun redoes them")
    rule = models.default_rule(name)
    other = [r for r in (auto_rule(name, s[AUTO_LABEL]) for s in seeds) if r != rule]
    if other:
        own += (f"; {len(other)} of {len(seeds)} ran under the rule {', '.join(sorted(set(other)))}, "
                f"not today's default {rule}: a rerun redoes them")
    lines = [_ratio_line(
        name, f"distance=auto lossless with >= {AUTO_VALUES_TARGET:g}x fewer fixed unique values than "
        f"delta {AUTO_DEFAULT_DELTA:g}",
        f"chose {chosen} over {len(seeds)} seeds; drop {auto['drop']:+.2f} ± {auto['se']:.2f} "
        f"[{auto['min']:+.2f}, {auto['max']:+.2f}] on the {half} test images it did not see{own}; "
        f"{default_values:.1f} / {auto_values:.1f} = {values:.2f}x; {_validation_needed(seeds, default, n)}",
        lossless and values >= AUTO_VALUES_TARGET)]
    if "h_tfmot" in compared:
        h_tfmot, h_auto = compared["h_tfmot"], compared["h_auto"]
        k_tfmot, k_auto = compared["k_tfmot"], compared["k_auto"]
        lines.append(_ratio_line(
            name, f"distance=auto >= {AUTO_ENTROPY_TARGET:g}x lower entropy than tfmot 16/layer "
            "(all stored parameters)",
            f"{h_tfmot:.2f} / {h_auto:.2f} = {h_tfmot / h_auto:.2f}x (kernels only: "
            f"{k_tfmot:.2f} / {k_auto:.2f} = {k_tfmot / k_auto:.2f}x)",
            h_tfmot / h_auto >= AUTO_ENTROPY_TARGET))
    # The default delta's rows may come from other runs (resumed sessions, other loads): the
    # time is judged against the search's own estimate of one run alone, in the same process.
    times = [r[AUTO_LABEL]["search_seconds"] / r[AUTO_LABEL]["wfn"]["full_run_seconds"] for r in seeds]
    lines.append(_ratio_line(
        name, f"distance=auto in <= {AUTO_TIME_TARGET:g}x the time of one fixing run (the search's "
        "own estimate of one run alone; RESULTS.md times it against a run in the same process)",
        f"{np.mean(times):.2f}x [{min(times):.2f}, {max(times):.2f}]", max(times) <= AUTO_TIME_TARGET))
    return lines


def _hindsight_cell(row: Optional[Dict], base: Dict, tfmot: Dict) -> Tuple[float, str]:
    """A lossless row against the automatic-distance targets: (score, table cell). Its ratios
    are ``base``'s fixed unique values over its own and ``tfmot``'s entropy (all stored
    parameters) over its own; the score is the smaller of the two as a share of its target,
    so a row meets both targets exactly when its score is at least 1."""
    if row is None:
        return -1.0, "-"
    values = base["fixed_unique"] / row["fixed_unique"]
    entropy = tfmot["entropy"] / row["entropy"]
    score = min(values / AUTO_VALUES_TARGET, entropy / AUTO_ENTROPY_TARGET)
    return score, f"`{row['rule']}` {row['delta']:g}: {row['drop']:+.2f}, {values:.2f}x / {entropy:.2f}x"


def hindsight_table(results: Dict) -> List[str]:
    """What any swept delta could give the automatic-distance targets, in hindsight: per model,
    the lossless rows (mean drop over every seed) of the default rule and of any rule, and each
    one's best row (`_hindsight_cell`: one that meets both targets, else the one whose larger
    shortfall is the smallest). A search that can only choose among these deltas meets both
    auto targets only where one row does."""
    lines = ["### What any swept delta could give (hindsight)", "",
             f"The lossless rows on every seed (mean drop at most {LOSSLESS_POINTS} points on all the "
             "test images, chosen with hindsight: no search is this lucky) against the automatic-distance "
             f"targets: >= {AUTO_VALUES_TARGET:g}x fewer fixed unique values than the default rule at "
             f"delta {AUTO_DEFAULT_DELTA:g}, >= {AUTO_ENTROPY_TARGET:g}x lower entropy (all stored "
             "parameters) than tfmot 16/layer. Best row: one that meets both, else the one nearest to "
             "it. Only the deltas swept as rows are judged (the searches' full runs at other deltas "
             "are in FRONTIER.json, judged on half the test images).", "",
             "| model | default rule: lossless deltas | its best row: values / entropy ratio | "
             "both reachable by the default rule? | best lossless row of any rule |",
             "|---|---|---|---|---|"]
    for name, per_model in results.items():
        default = models.default_rule(name)
        rows = summarise(per_model)
        every = len(per_model["seeds"])
        full = [r for r in rows if r["rule"] and r["seeds"] == every and r["fixed_unique"]]
        base = next((r for r in full if r["rule"] == default and r["delta"] == AUTO_DEFAULT_DELTA), None)
        tfmot = next((r for r in rows if r["label"] == "tfmot-16" and r["seeds"] == every), None)
        if base is None or tfmot is None:
            continue
        lossless = [r for r in full if r["drop"] <= LOSSLESS_POINTS]
        mine = sorted((r for r in lossless if r["rule"] == default), key=lambda r: r["delta"])
        swept = sorted({r["delta"] for r in full if r["rule"] == default})
        # The first of equal scores: the rules in table order, `rule="auto"`'s first.
        best = [max((_hindsight_cell(r, base, tfmot) for r in group), key=lambda cell: cell[0],
                    default=_hindsight_cell(None, base, tfmot)) for group in (mine, lossless)]
        lines.append(
            f"| {name} | {', '.join(format(r['delta'], 'g') for r in mine) or 'none'} (swept "
            f"{', '.join(format(d, 'g') for d in swept)}) | {best[0][1]} | "
            f"{'yes' if best[0][0] >= 1.0 else '**no**'} | "
            f"{best[1][1]}{' (both)' if best[1][0] >= 1.0 else ''} |")
    return lines + [""]


def _validation_needed(seeds: List[Dict], default: str, n: int) -> str:
    """How many validation examples the search would need for one paired standard error of a
    drop to be at most the tolerance, at the default delta: a share f of the examples changes
    answer between the float and the fixed model (mean over the seeds, all test images), the
    drop's paired SE on m examples is about sqrt(f / m), so m >= f / tolerance^2. The search's
    margin of one SE can pass a run that changes answers and loses nothing only with more
    examples than that (one that gains can pass with fewer); f is that of the default delta,
    larger deltas change more answers. Rows without ``validation_images`` validated on n // 2
    test images (`auto_split`)."""
    flips = float(np.mean([np.mean(unpack(r["float"]["correct"], n) != unpack(r[default]["correct"], n))
                           for r in seeds]))
    had = seeds[0][AUTO_LABEL].get("wfn", {}).get("validation_images", n // 2)
    return (f"at delta {AUTO_DEFAULT_DELTA:g} {100 * flips:.1f}% of the test images change answer, so one "
            f"paired SE within the tolerance needs about {flips / run.AUTO_TOLERANCE ** 2:,.0f} "
            f"validation images (the search had {had})")


def plot(results: Dict, path: str) -> Optional[str]:
    """Accuracy drop against unique kernel values (log), one panel per model, one line per rule
    (all stored values would be dominated by the BatchNorm moving statistics, the same for all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = summarise(results[name])
        for rule in RULES:
            pts = sorted((r["unique_kernels"], r["drop"], r["se"]) for r in rows if r["rule"] == rule)
            if pts:
                u, d, e = zip(*pts)
                ax.errorbar(u, d, yerr=e, marker="o", capsize=3, label=rule)
        for r in rows:
            if r["label"] == AUTO_LABEL:
                ax.errorbar([r["unique_kernels"]], [r["drop"]], yerr=[r["se"]], marker="*", markersize=10,
                            color="crimson", linestyle="none", label="distance=auto")
            if r["label"] == "tfmot-16":
                ax.errorbar([r["unique_kernels"]], [r["drop"]], yerr=[r["se"]], marker="s", color="black",
                            linestyle="none", label="tfmot 16/layer")
        ax.axhline(LOSSLESS_POINTS, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_title(name)
        ax.set_xlabel("unique kernel values")
        ax.set_ylabel("accuracy drop, points (lower is better)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def optimizer_note(optimizer: str) -> str:
    if optimizer == "fresh":
        return ("Fine-tuning starts a fresh optimizer at every stage (`UpdateFixingStep()`, the "
                "library's default).")
    return ("Fine-tuning carries the optimizer state over between stages "
            "(`UpdateFixingStep(fresh_optimizer=False)`, the default when this run started; the "
            "fresh optimizer, now the default, is measured in "
            "[training_ablation.md](training_ablation.md)).")


def _measured_note(per_models: Dict) -> str:
    """The rows' own measuring time (float training included), summed over every run that added
    to the results file: a resumed run's wall time covers only the rows it added."""
    total = sum(row.get("seconds") or 0.0 for per_model in per_models.values()
                for rows in per_model["seeds"].values() for row in rows.values())
    took = f"{total / 3600:.1f} h" if total >= 3600 else f"{total / 60:.0f} min"
    return f" (its rows took {took} to measure, over the runs that wrote them)" if total else ""


def write_report(results: Dict, output: str, seconds: Optional[float]) -> str:
    png = os.path.splitext(output)[0] + ".png"
    optimizer = results.get("_optimizer", OPTIMIZER_BEFORE)
    per_models = {k: v for k, v in results.items() if not k.startswith("_")}
    picture = plot(per_models, png) if per_models else None
    lines = ["# The compression frontier over seeds", "",
             "Generated by `python benchmarks/frontier.py"
             + (f" --optimizer {optimizer}" if optimizer != "fresh" else "") + "`"
             + (f" in {seconds / 60:.0f} min" if seconds else "")
             + f" on {os.cpu_count()} CPUs{_measured_note(per_models)}. Drops are paired (float and "
             "compressed model on the same test images, per seed); a row is lossless when its mean drop is at most "
             f"{LOSSLESS_POINTS} points. `{AUTO_LABEL}`: `tfmot_wfn.search_distance` (tolerance "
             f"{run.AUTO_TOLERANCE:g}, margin one paired SE, budget 3 runs) chooses on a random half of the seed's test "
             "images and is scored (with the float model) on the other half. "
             f"`{CONTROL_LABEL}`: the float model fine-tuned exactly as the WFN rows are (the same "
             "epochs, lr, optimizer and batches) with nothing fixed and no regulariser: what that "
             "training costs without WFN's constraints, which also hold the weights near the float "
             "model's (a WFN row can lose less than this row). Method: the script's "
             "docstring. " + optimizer_note(optimizer), ""]
    if picture:
        lines += [f"![accuracy drop against unique kernel values per rule]({os.path.basename(png)})", ""]
    for name, per_model in per_models.items():
        lines += model_table(name, per_model)
    lines += targets_table(per_models)
    lines += hindsight_table(per_models)
    lines += ablation_table(per_models)
    text = "\n".join(lines)
    with open(output, "w") as f:
        f.write(text)
    return text


def keep_only_peer_rows(results: Dict) -> None:
    """Drop the WFN rows and the control row (measured under the other ``--optimizer``); keep
    float, int8 and tfmot."""
    for name, per_model in results.items():
        if not name.startswith("_"):
            _drop_rows(per_model, lambda label: label.startswith("WFN ") or label == CONTROL_LABEL)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=sorted(PLAN))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 float epochs, 1 epoch a stage, the first delta only, no tfmot")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help="the report (its .json beside it); the default one also rewrites "
                             "README's two tables of it (frontier_readme.py)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--float-cache", default=None, metavar="DIR",
                        help="save each trained float model here and reuse it on a rerun "
                             "(the float row still checks that it scores as the saved one)")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="fresh",
                        help="a fresh optimizer at every stage (default, as UpdateFixingStep) or "
                             "the state carried over between stages")
    parser.add_argument("--in-process", action="store_true",
                        help="measure every model and seed in this process (default: a process "
                             "for each model, seed and pass, whose memory goes back when it ends)")
    parser.add_argument("--only-seed", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--only-pass", choices=sorted(PASSES), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    json_path = os.path.splitext(args.output)[0] + ".json"
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    results: Dict = {}
    if os.path.isfile(json_path):
        with open(json_path) as f:
            results = json.load(f)
    if args.report_only:
        print(write_report(results, args.output, None))
        update_readme(args.output, results)
        return 0
    if results.get("_optimizer", OPTIMIZER_BEFORE) != args.optimizer:
        keep_only_peer_rows(results)
    results["_optimizer"] = args.optimizer

    def save():
        save_results(results, json_path)

    start = time.time()
    if args.only_seed is not None:  # one model, seed and pass, for `measure_in_processes`
        passes = (PASSES[args.only_pass],) if args.only_pass else tuple(PASSES.values())
        for name in args.models:
            measure_model(name, list(range(args.seeds)), results, save, args.quick, args.float_cache,
                          args.optimizer, only_seed=args.only_seed, passes=passes)
        return 0
    if not args.in_process:
        results = measure_in_processes(args, json_path, results)
    else:
        for name in args.models:
            measure_model(name, list(range(args.seeds)), results, save, args.quick, args.float_cache,
                          args.optimizer)
            write_report(results, args.output, None)
    print(write_report(results, args.output, time.time() - start))
    update_readme(args.output, results)
    return 0


def update_readme(output: str, results: Dict) -> None:
    """README's tables of the committed report (`frontier_readme`), rewritten when ``output``
    is that report (`DEFAULT_OUTPUT`); a scratch report (the CI's smoke runs) leaves them."""
    if os.path.abspath(output) != os.path.abspath(DEFAULT_OUTPUT):
        return
    import frontier_readme

    found = frontier_readme.update_readme(README, results)
    run.say(f"README.md: rewrote the {', '.join(found) or 'no'} table(s) of FRONTIER.json")


if __name__ == "__main__":
    sys.exit(main())
