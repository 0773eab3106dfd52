"""search_distance: the largest delta within tolerance, at a bounded cost, on real digits."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import keras_helpers
from keras_helpers import L, keras

import tfmot_wfn
from tfmot_wfn.apps.distance_search import (DEFAULT_DELTAS, FrontierRow, _Costs, _Runs, _search, _Training,
                                            _ties_fail, _top1_correct, _warn_if_coarse,
                                            _warn_if_unresolved, _within, paired_drop_se, pass_threshold,
                                            top1_accuracy)
from tfmot_wfn.core.paired_accuracy import chosen_run, lower_accuracy

DELTAS = (0.01, 0.03, 0.3)


@pytest.fixture(scope="module")
def digits_mlp(digits):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Dense(32, activation="relu"),
                              L.Dense(10, activation="softmax")])
    keras_helpers.compile_classifier(model, keras.optimizers.Adam(3e-3))
    model.fit(digits.x_train, digits.y_train, epochs=15, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def search(digits_mlp, digits):
    before = [w.copy() for w in digits_mlp.get_weights()]
    result = tfmot_wfn.search_distance(
        digits_mlp, (digits.x_train, digits.y_train), (digits.x_test, digits.y_test),
        tolerance=0.01, deltas=DELTAS, batch_size=64, verbose=0)
    after = digits_mlp.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after)), "the float model changed"
    return result


def test_the_chosen_model_is_a_measured_full_run_within_tolerance(search, digits):
    # Whether proxies paid depends on this machine's timings; the scripted tests below fix them.
    chosen = [r for r in search.frontier if r.source == "full" and r.distance == search.distance]
    assert len(chosen) == 1
    assert search.margin_se == 1.0  # the default: the drop plus one paired SE within tolerance
    assert search.within_tolerance == (
        search.accuracy - search.drop_se >= pass_threshold(search.float_accuracy, 0.01))
    assert search.accuracy == chosen[0].accuracy == pytest.approx(
        top1_accuracy(search.model, (digits.x_test, digits.y_test)))
    assert tfmot_wfn.unique_weights(search.model) == chosen[0].unique_values
    assert search.within_tolerance
    # 0.3 is far past the cliff of this MLP: no run there is chosen.
    assert search.distance < 0.3


def test_every_run_reports_the_paired_standard_error_of_its_drop(search, digits, digits_mlp):
    data = (digits.x_test, digits.y_test)
    float_correct = _top1_correct(digits_mlp, data)
    chosen = _top1_correct(search.model, data)
    assert search.drop_se == pytest.approx(paired_drop_se(float_correct, chosen))
    assert all(np.isfinite(r.drop_se) and r.drop_se >= 0 for r in search.frontier)
    assert f"{100 * search.drop_se:6.2f}" in str(search) and "± SE" in str(search)


def _slow_paired_se(a, b):
    d = [float(x) - float(y) for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    variance = sum((v - mean) ** 2 for v in d) / (len(d) - 1)
    return (variance / len(d)) ** 0.5


def test_the_paired_standard_error_matches_a_slow_reference():
    rng = np.random.default_rng(0)
    for n in (2, 3, 17, 360):
        a, b = rng.random(n) < 0.9, rng.random(n) < 0.85
        assert paired_drop_se(a, b) == pytest.approx(_slow_paired_se(a, b), rel=1e-12, abs=1e-15)
    assert paired_drop_se(np.ones(5, bool), np.ones(5, bool)) == 0.0  # same answers: no doubt
    assert np.isnan(paired_drop_se(np.ones(5, bool), np.ones(4, bool)))  # not the same examples


def test_a_chosen_run_whose_drop_the_validation_data_cannot_resolve_gets_a_warning():
    with pytest.warns(UserWarning, match=r"standard error of 1\.90 points.*tolerance \(0\.50 points\)"):
        _warn_if_unresolved(0.019, 0.005)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_unresolved(0.004, 0.005)
        _warn_if_unresolved(float("nan"), 0.005)  # unknown (a dataset in another order): silent


def test_cost_stays_within_the_budget(search, digits):
    steps_per_epoch = int(np.ceil(len(digits.y_train) / 64))
    assert search.budget_steps == 3 * 10 * steps_per_epoch
    assert search.train_steps <= search.budget_steps
    assert search.train_steps == sum(r.train_steps for r in search.frontier)
    # One full run alone: the first run's overhead plus a full run's batches, so at least
    # what the first run (a proxy here: fewer batches) cost.
    assert search.full_run_seconds >= search.frontier[0].seconds - 1e-9
    assert search.budget_seconds == pytest.approx(3 * search.full_run_seconds)
    assert f"x one full run ({search.full_run_seconds:.0f} s)" in str(search)


def test_the_seconds_budget_is_full_runs_alone_and_later_runs_skip_the_tracing():
    costs = _Costs(full_steps=100, budget=3)
    assert costs.full_run() is None and costs.affordable(10, 5, 5)  # nothing timed yet
    # The first run (a proxy of 10 batches at 0.2 s) took 12 s: 10 s of overhead (making the
    # model, tracing, stages, evaluation), so one full run alone ~ 10 + 100 * 0.2.
    costs.record(seconds=12.0, steps=10, step_seconds=0.2)
    assert costs.full_run() == pytest.approx(30.0) and costs.budget_seconds() == pytest.approx(90.0)
    assert costs.next_run(10) == pytest.approx(12.0) and costs.next_run(100) == pytest.approx(30.0)
    assert costs.affordable(10, 1, 2)  # 12 + 12 + 60
    assert not costs.affordable(10, 2, 2)  # 12 + 24 + 60 > 90
    # A later run restarts the traced model: 4 s of overhead. The budget stays 3 runs alone;
    # the next runs are estimated with the later overhead.
    costs.record(seconds=24.0, steps=100, step_seconds=0.2)
    assert costs.full_run() == pytest.approx(30.0) and costs.used == pytest.approx(36.0)
    assert costs.next_run(100) == pytest.approx(24.0) and costs.next_run(10) == pytest.approx(6.0)
    assert costs.affordable(10, 1, 2) and not costs.affordable(10, 0, 3)  # 36 + 6 + 48 <= 90 < 108
    # The first run's tracing counts for a run alone, not for the runs after it.
    traced = _Costs(full_steps=100, budget=3)
    traced.record(seconds=12.0, steps=10, step_seconds=0.2, tracing=6.0)
    assert traced.full_run() == pytest.approx(30.0) and traced.next_run(10) == pytest.approx(6.0)
    # Batches dominate: the overhead is small, and proxies are cheap against the budget.
    cheap = _Costs(full_steps=100, budget=3)
    cheap.record(seconds=2.5, steps=10, step_seconds=0.2)  # overhead 0.5 s
    assert cheap.full_run() == pytest.approx(20.5)
    assert cheap.affordable(10, 5, 2) and not cheap.affordable(10, 8, 2)  # 2.5 + 12.5 + 41 <= 61.5 < 2.5 + 20 + 41


def test_a_measured_full_run_corrects_the_estimates_made_from_proxies():
    # The photo ResNet-20 of benchmarks/RESULTS.md: proxies of 100 batches, full runs of 500.
    # The first proxy (with 15 s of tracing) put one run alone at 35 + 500 * 0.2 = 135 s; a
    # restarted full run then took 149 s (49 s of overhead: a full run's overhead exceeds a
    # proxy's), so a run alone costs at least 149 + 15 s.
    costs = _Costs(full_steps=500, budget=3)
    costs.record(seconds=55.0, steps=100, step_seconds=0.2, tracing=15.0)
    assert costs.full_run() == pytest.approx(135.0)
    for _ in range(3):
        costs.record(seconds=31.0, steps=100, step_seconds=0.2)  # later proxies: 11 s of overhead
    assert costs.next_run(500) == pytest.approx(111.0)  # full runs still estimated from proxies
    costs.record(seconds=149.0, steps=500, step_seconds=0.2)
    assert costs.full_run() == pytest.approx(164.0) and costs.budget_seconds() == pytest.approx(492.0)
    assert costs.next_run(500) == pytest.approx(149.0)  # full runs from full runs ...
    assert costs.next_run(100) == pytest.approx(31.0)  # ... proxies from proxies
    # 297 s used: one more full run fits the corrected budget (it did not fit 3 x 135 s).
    assert costs.used + costs.next_run(500) > 3 * 135.0 and costs.affordable(100, 0, 1)
    # A full run cheaper than the first estimate does not shrink the budget below it.
    quick = _Costs(full_steps=500, budget=3)
    quick.record(seconds=55.0, steps=100, step_seconds=0.2, tracing=15.0)
    quick.record(seconds=105.0, steps=500, step_seconds=0.2)
    assert quick.full_run() == pytest.approx(135.0) and quick.next_run(500) == pytest.approx(105.0)


def test_proxies_bisect_the_candidates_from_the_middle(search):
    proxies = [r for r in search.frontier if r.source == "proxy"]
    assert proxies[0].distance == DELTAS[1]  # bisection starts in the middle
    assert len({r.distance for r in proxies}) == len(proxies)
    assert all(r.unique_values >= 1 and 0.0 <= r.accuracy <= 1.0 for r in search.frontier)


def test_table_json_and_plot(search, tmp_path):
    text = str(search)
    assert f"chose delta {search.distance:g}" in text and "proxy" in text and "full" in text
    search.to_json(str(tmp_path / "search.json"))
    data = json.loads((tmp_path / "search.json").read_text())
    assert data["distance"] == search.distance and len(data["frontier"]) == len(search.frontier)
    search.plot(str(tmp_path / "frontier.png"))
    assert (tmp_path / "frontier.png").stat().st_size > 1000


def test_accuracy_reads_one_hot_and_datasets(digits_mlp, digits):
    import tensorflow as tf

    sparse = top1_accuracy(digits_mlp, (digits.x_test, digits.y_test))
    one_hot = top1_accuracy(digits_mlp, (digits.x_test, np.eye(10)[digits.y_test]))
    batched = tf.data.Dataset.from_tensor_slices((digits.x_test, digits.y_test)).batch(50)
    assert sparse == one_hot == top1_accuracy(digits_mlp, batched)
    expected = np.mean(np.argmax(digits_mlp.predict(digits.x_test, verbose=0), -1) == digits.y_test)
    assert sparse == pytest.approx(expected)


class _ReachedTheRuns(Exception):
    pass


def _stop_at_the_runs(*args, **kwargs):
    raise _ReachedTheRuns


def test_a_validation_dataset_that_reshuffles_every_pass_is_refused_before_any_run(
        digits_mlp, digits, monkeypatch):
    import tensorflow as tf

    from tfmot_wfn.apps import distance_search

    monkeypatch.setattr(distance_search, "_Runs", _stop_at_the_runs)  # no fixing run happens
    x, y = digits.x_test, digits.y_test
    train = (digits.x_train, digits.y_train)
    reshuffled = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=1).batch(64)
    with pytest.raises(ValueError, match="same examples in the same order every pass"):
        tfmot_wfn.search_distance(digits_mlp, train, reshuffled, verbose=0)
    # Shuffled once (the same order every pass): accepted, the search goes on to its runs.
    once = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        len(y), seed=1, reshuffle_each_iteration=False).batch(64)
    assert 0 < top1_accuracy(digits_mlp, once) < 1  # a pass with both right and wrong answers
    with pytest.raises(_ReachedTheRuns):
        tfmot_wfn.search_distance(digits_mlp, train, once, verbose=0)
    with pytest.raises(_ReachedTheRuns):  # arrays: read in order, no second pass needed
        tfmot_wfn.search_distance(digits_mlp, train, (x, y), verbose=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"tolerance": 1.5}, "tolerance is an absolute accuracy drop"),
    ({"deltas": ()}, "deltas must be positive"),
    ({"budget": 0.5}, "budget must be >= 1"),
    ({"margin_se": -1.0}, "margin_se is a number of standard errors"),
    ({"distance": 0.01}, "chooses distance"),
])
def test_bad_arguments_are_refused(digits_mlp, digits, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tfmot_wfn.search_distance(digits_mlp, (digits.x_train, digits.y_train),
                                  (digits.x_test, digits.y_test), **kwargs)


def test_an_uncompiled_model_needs_loss_and_optimizer(digits):
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Dense(10)])
    with pytest.raises(ValueError, match="needs a loss and an optimizer"):
        tfmot_wfn.search_distance(model, (digits.x_train, digits.y_train),
                                  (digits.x_test, digits.y_test))


def test_every_run_follows_the_schedule_given_by_fractions(digits_mlp, digits):
    # Two stages a run (the fix job passes its --fractions): a full run trains two epochs.
    n = 256
    result = tfmot_wfn.search_distance(
        digits_mlp, (digits.x_train[:n], digits.y_train[:n]), (digits.x_test, digits.y_test),
        tolerance=0.5, deltas=(0.01, 0.05), fractions=(0.5, 1.0), batch_size=64, budget=1.0,
        verbose=0)
    full = [r for r in result.frontier if r.source == "full"]
    assert full and all(r.train_steps == 2 * (n // 64) for r in full)
    assert result.budget_steps == 2 * (n // 64)
    chosen = [r for r in full if r.distance == result.distance][-1]
    assert tfmot_wfn.unique_weights(result.model) == chosen.unique_values


class _ScriptedRuns(_Runs):
    """`_Runs` whose runs are scripted: ``measured(delta, source)`` gives a run's (accuracy,
    paired SE of its drop), or ``passes(delta, source)`` whether it is within tolerance (0.9,
    else 0.5, no spread); a run costs ``overhead`` seconds plus 0.01 s a batch (full: 100)."""

    STEP = 0.01

    def __init__(self, passes, overhead, budget=3.0, measured=None, count_seconds=True):
        training = _Training(train=None, loss=None, optimizer_config={}, fix_kwargs={}, seed=0)
        super().__init__(None, training, None, budget, 10 * 10, lambda *a: None,
                         count_seconds=count_seconds)
        self.overhead = overhead
        self.measured = measured or (lambda d, source: (0.9 if passes(d, source) else 0.5, 0.0))

    def run(self, distance, steps_per_stage, source):
        steps = self.stages * steps_per_stage
        seconds = self.overhead + steps * self.STEP
        accuracy, drop_se = self.measured(distance, source)
        row = FrontierRow(distance=distance, unique_values=1, entropy_bits=0.0,
                          accuracy=accuracy, source=source, seconds=seconds, train_steps=steps,
                          drop_se=drop_se)
        self.steps_used += steps
        self.costs.record(seconds, steps, self.STEP, tracing=0.0)
        self.frontier.append(row)
        return row, f"model at {distance:g}"


def _scripted_search(passes, overhead, budget=3.0, margin=0.0, measured=None, count_seconds=True):
    runs = _ScriptedRuns(passes, overhead, budget, measured, count_seconds)
    row, fixed = _search(runs, list(DEFAULT_DELTAS), proxy_stage_steps=1, full_stage_steps=10,
                         threshold=0.8, proxy_slack=0.0, margin=margin)
    assert runs.stages == 10 and fixed == f"model at {row.distance:g}"
    assert runs.steps_used <= runs.budget_steps
    assert not count_seconds or runs.costs.used <= runs.costs.budget_seconds() + 1e-9
    return row, [(r.distance, r.source) for r in runs.frontier]


def test_a_search_counted_in_batches_tries_the_same_deltas_at_any_speed():
    # The same runs on a fast and a slow machine (a run's overhead 0.05 s to 20 s against
    # 0.01 s a batch): counted in batches and seconds the slow one affords fewer proxies and
    # runs, and chooses another delta; counted in batches only, both try the same deltas.
    def passes(d, source):
        return d <= (0.03 if source == "proxy" else 0.02)

    timed = [_scripted_search(passes, overhead)[1] for overhead in (0.05, 0.45, 20.0)]
    assert len({tuple(t) for t in timed}) > 1
    by_batches = [_scripted_search(passes, overhead, count_seconds=False)
                  for overhead in (0.05, 0.45, 20.0)]
    assert all(runs == by_batches[0][1] and row.distance == 0.0075 for row, runs in by_batches)
    # A proxy (10 batches) is a tenth of a full run's 100, so proxies always pay in batches;
    # after three of them (30 batches) the 300-batch budget holds two full runs, not three.
    # The full run at 0.03 fails, and the last one goes to the smallest delta.
    assert by_batches[0][1] == [(0.04, "proxy"), (0.015, "proxy"), (0.03, "proxy"),
                                (0.03, "full"), (0.0075, "full")]


def test_counted_in_batches_proxies_that_cannot_pay_are_not_run_at_all():
    # A proxy of 6 batches a stage against a full run's 10 is more than half of it: in
    # batches that is known before any run, so the search bisects with full runs only.
    runs = _ScriptedRuns(lambda d, source: d <= 0.02, overhead=0.0, count_seconds=False)
    row, _ = _search(runs, list(DEFAULT_DELTAS), proxy_stage_steps=6, full_stage_steps=10,
                     threshold=0.8, proxy_slack=0.0)
    assert {r.source for r in runs.frontier} == {"full"} and row.distance <= 0.02


def test_the_proxies_leave_room_for_a_second_full_run():
    # Proxies of 0.55 s against a 1.45 s full run (they pay), optimistic: they pass up to 0.03,
    # full runs only up to 0.02. A third proxy (0.03) would leave the budget (4.35 s) room for one
    # full run only, which would fail with no fallback; two proxies leave room for two.
    row, runs = _scripted_search(lambda d, source: d <= (0.03 if source == "proxy" else 0.02),
                                 overhead=0.45)
    assert runs == [(0.04, "proxy"), (0.015, "proxy"), (0.015, "full"), (0.02, "full")]
    assert row.distance == 0.02 and row.accuracy == 0.9


def test_proxies_that_cost_most_of_a_full_run_give_way_to_a_full_run_bisection():
    # 1 s of overhead: a proxy (1.1 s) is 55% of a full run (2 s). Full runs pass up to 0.08.
    row, runs = _scripted_search(lambda d, source: d <= 0.08, overhead=1.0)
    assert runs == [(0.04, "proxy"), (0.04, "full"), (0.08, "full")]
    assert row.distance == 0.08 and row.accuracy == 0.9


def test_while_no_full_run_passed_the_last_affordable_one_goes_to_the_smallest_delta():
    # Only 0.0075 passes; the 0.04 proxy fails, the full run at 0.015 fails, and the budget holds
    # one more full run: it goes to 0.0075 rather than to the bisection's 0.01.
    row, runs = _scripted_search(lambda d, source: d <= 0.0075, overhead=1.0)
    assert runs == [(0.04, "proxy"), (0.015, "full"), (0.0075, "full")]
    assert row.distance == 0.0075 and row.accuracy == 0.9


def test_when_every_run_fails_the_most_accurate_full_run_is_returned_within_the_budget():
    row, runs = _scripted_search(lambda d, source: False, overhead=1.0)
    assert runs[-1] == (DEFAULT_DELTAS[0], "full") and row.accuracy == 0.5


def test_full_runs_start_at_the_last_passing_proxy_and_stop_below_a_failed_one():
    # Cheap proxies pass up to 0.02; full runs would pass up to 0.03, but the failed 0.03 proxy
    # (far below the threshold) caps the climb.
    row, runs = _scripted_search(lambda d, source: d <= (0.02 if source == "proxy" else 0.03),
                                 overhead=0.25)
    assert [d for d, source in runs if source == "proxy"] == [0.04, 0.015, 0.03]
    assert [d for d, source in runs if source == "full"] == [0.015, 0.02]
    assert row.distance == 0.02


def test_a_failed_first_full_run_with_one_run_left_falls_back_to_the_smallest_delta():
    # Optimistic proxies (passing up to 0.065, as on the photo ResNet-20) start the full runs at
    # 0.04, which fails; the budget holds one more full run, and walking down one delta (0.03)
    # would end it outside tolerance: the last run goes to 0.0075, which passes.
    row, runs = _scripted_search(lambda d, source: d <= (0.065 if source == "proxy" else 0.0075),
                                 overhead=0.45)
    assert runs == [(0.04, "proxy"), (0.08, "proxy"), (0.04, "full"), (0.0075, "full")]
    assert row.distance == 0.0075 and row.accuracy == 0.9


def test_the_walk_steps_down_one_delta_while_the_budget_holds_two_more_runs():
    # Cheap proxies (0.15 s against a 1.05 s full run, a budget of four runs) pass up to 0.03,
    # full runs up to 0.02: the full run at 0.03 fails with two more affordable, so the walk
    # steps down one delta (0.02, which passes) instead of falling back to the smallest.
    row, runs = _scripted_search(lambda d, source: d <= (0.03 if source == "proxy" else 0.02),
                                 overhead=0.05, budget=4.0)
    assert [d for d, source in runs if source == "full"] == [0.03, 0.02]
    assert row.distance == 0.02 and row.accuracy == 0.9


def _lucky_large_deltas(distance, source):
    # Above 0.015 the validation accuracy passes (0.85 >= 0.8) only by a noisy draw (drop SE
    # 0.08); at 0.015 and below it passes by far (SE 0.02).
    return (0.85, 0.08) if distance > 0.015 else (0.9, 0.02)


@pytest.mark.parametrize("margin, chosen, full_runs", [
    (0.0, 0.08, [0.04, 0.08]),  # judged on accuracy alone: the largest lucky delta
    (1.0, 0.0075, [0.04, 0.0075]),  # 0.85 - 0.08 < 0.8: 0.04 fails, the last run goes to 0.0075
])
def test_a_run_passes_when_its_accuracy_less_margin_standard_errors_is_within_tolerance(
        margin, chosen, full_runs):
    # Proxies cost most of a full run (overhead 1 s): a bisection by full runs after one proxy.
    row, runs = _scripted_search(None, overhead=1.0, margin=margin, measured=_lucky_large_deltas)
    assert [d for d, source in runs if source == "full"] == full_runs
    assert row.distance == chosen


@pytest.mark.parametrize("margin, chosen", [(0.0, 0.015), (1.0, 0.0075)])
def test_when_every_run_fails_the_best_accuracy_less_margin_standard_errors_is_returned(margin, chosen):
    # Every run fails; from 0.015 up the most accurate (0.79) but noisy (SE 0.05: 0.74 less
    # one SE), 0.0075 less accurate (0.78) and certain (SE 0.01: 0.77).
    def measured(distance, source):
        return (0.79, 0.05) if distance >= 0.015 else (0.78, 0.01) if distance == 0.0075 else (0.5, 0.0)

    row, runs = _scripted_search(None, overhead=1.0, margin=margin, measured=measured)
    assert [d for d, source in runs if source == "full"] == [0.015, 0.0075]
    assert row.distance == chosen


def _slow_chosen_run(distances, lower, threshold):
    best_passing = best_any = None
    for i in range(len(lower)):
        if lower[i] >= threshold and (best_passing is None or distances[i] > distances[best_passing]):
            best_passing = i
        if best_any is None or lower[i] > lower[best_any]:
            best_any = i
    return best_any if best_passing is None else best_passing


def test_chosen_run_matches_a_slow_reference_on_random_runs():
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(1, 7))
        distances = list(rng.permutation(DEFAULT_DELTAS)[:n])
        lower = list(np.round(rng.uniform(0.6, 0.9, n), 2))  # rounded: ties happen
        threshold = float(rng.uniform(0.6, 0.95))
        assert chosen_run(distances, lower, threshold) == _slow_chosen_run(distances, lower, threshold)
    with pytest.raises(ValueError, match="no run"):
        chosen_run([], [], 0.5)


def test_lower_accuracy_subtracts_margin_standard_errors_and_ignores_an_unknown_one():
    assert lower_accuracy(0.8, 0.03, 1.0) == pytest.approx(0.77)
    assert lower_accuracy(0.8, 0.03, 0.0) == 0.8
    assert lower_accuracy(0.8, float("nan"), 2.0) == 0.8


def test_a_validation_set_where_one_example_outweighs_the_tolerance_gets_a_warning():
    with pytest.warns(UserWarning, match=r"180 examples: one is 0\.56 points.*at least 200 examples"):
        _warn_if_coarse(180, 0.005)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_coarse(200, 0.005)  # one example is exactly the tolerance
        _warn_if_coarse(10, 0.0)  # no extra error allowed: asked for


@pytest.mark.parametrize("margin", [0.0, 0.5, 1.0])
def test_on_a_coarse_validation_set_a_run_passes_only_as_the_warning_says(margin):
    # 180 examples, tolerance 0.005: the fixed model gains `gained` examples the float model got
    # wrong and loses `lost` it got right (the float model gets 170 right).
    n, tolerance = 180, 0.005
    threshold = pass_threshold(170 / n, tolerance)
    strict = _ties_fail(n, tolerance, margin)  # one tie's SE is 0.79 points: fails from 0.64 SE
    assert strict == (margin == 1.0)
    with pytest.warns(UserWarning, match="fewer errors than the float model, or exactly its errors"
                      if strict else "makes no more errors than the float model"):
        _warn_if_coarse(n, tolerance, margin)
    for gained in range(8):
        for lost in range(8):
            float_right = np.zeros(n, bool)
            float_right[:170] = True
            fixed_right = float_right.copy()
            fixed_right[:lost] = False
            fixed_right[170:170 + gained] = True
            row = FrontierRow(0.01, 1, 0.0, float(fixed_right.mean()), "full", 0.0, 0,
                              paired_drop_se(float_right, fixed_right))
            passed = _within(row, threshold, margin)
            assert lost <= gained or not passed  # never more errors than the float model
            if margin == 0.0:
                assert passed == (lost <= gained)
            elif strict and gained <= lost:  # a tie passes only when the errors are the same
                assert passed == (gained == lost == 0)
            if lost == 0:  # strictly fewer errors, none new: within one SE
                assert passed
    float_right = np.arange(n) < 170
    one_tie = float_right.copy()
    one_tie[[0, 170]] = False, True  # one right answer lost, one gained
    row = FrontierRow(0.01, 1, 0.0, float(one_tie.mean()), "full", 0.0, 0,
                      paired_drop_se(float_right, one_tie))
    assert _within(row, threshold, margin) == (not strict)


def test_a_drop_of_exactly_the_tolerance_passes_whatever_the_rounding():
    for n, tolerance in ((200, 0.005), (400, 0.0025), (1000, 0.001)):
        for right in range(2, n + 1):
            threshold = pass_threshold(right / n, tolerance)
            assert (right - 1) / n >= threshold and (right - 2) / n < threshold, (n, right)
