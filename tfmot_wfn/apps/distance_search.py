"""Automatic choice of ``distance``: the largest delta whose fixed model keeps the accuracy.

```python
import tfmot_wfn

search = tfmot_wfn.search_distance(model, (x_train, y_train), (x_val, y_val), tolerance=0.005)
print(search)                      # the frontier: delta, unique values, entropy, accuracy, source
final = search.model               # the fixed (stripped) model of the chosen delta's full run
search.plot("frontier.png")
```

How it searches, at a bounded cost:

1. **Proxies** (bisection over the sorted candidate deltas, assuming accuracy falls as delta
   grows): the paper's ten stages with a short fine-tune between them (``proxy_steps`` batches
   a stage, a fifth of an epoch by default), then the validation accuracy. Proxies run while
   the budget still holds two full runs after them, and while one costs less than half a
   full run (``PROXY_SHARE``; with a small data set the per-run overhead makes a proxy
   nearly a full run).
2. **Full runs** (the real schedule, ``epochs_per_stage`` epochs a stage). After proxies that
   paid: starting at the largest delta whose proxy came within ``tolerance + proxy_slack`` of
   the float model (the proxy trains less, so it is pessimistic), after a run within
   ``tolerance`` the next larger delta is tried (unless its proxy fell more than
   ``5 * proxy_slack`` below the tolerance), after one outside it the next smaller, until the
   boundary is found. When proxies did not pay, the bisection goes on with full runs below
   the smallest delta whose proxy failed. Either way, while no full run has passed, the last
   affordable one goes to the smallest candidate left (a walk down one delta at a time would
   end the budget outside ``tolerance`` when the first full run failed by far).
3. The budget is ``budget`` full runs (3 by default), counted twice: in training batches (all
   runs together train at most ``budget`` times the batches of one full run) and, unless
   ``count_seconds=False`` (the same choices on any machine), in seconds
   (all runs together take at most ``budget`` times what one full run costs alone, i.e.
   ``fix_weights`` to ``strip_fixing`` at one delta: estimated from the first run as its
   overhead plus a full run's batches, and at least a later full run plus the tracing it
   skipped once one was measured). Every run trains the same wrapped model: the first
   makes it (`fix_weights`, tracing its training step); later ones put it back to its start
   (`FixingRestart`) with the new delta and skip the tracing, so they cost less, and the
   next run is estimated from what the later runs of its kind (full or proxy) cost besides
   their batches (fixing stages, stripping, evaluation). Two full runs are left for when the
   budget holds them, so a first full run outside ``tolerance`` can fall back to a smaller
   delta. The chosen model is the largest-delta full run within tolerance (else the full run
   with the best accuracy less ``margin_se`` standard errors); `DistanceSearch.within_tolerance`
   says which.

Accuracy is top-1 on the validation data (sparse integer labels or one-hot rows; a single
sigmoid output is thresholded at 0.5). Every run also reports the paired standard error of its
drop (float and fixed model on the same examples, so a dataset must yield them in the same order
every pass: the search refuses one whose per-example results differ on a second pass); when the
chosen run's is larger than ``tolerance`` the search warns: the validation data cannot tell a
pass from a failure there. A full run is within tolerance when its drop plus
``margin_se`` (1 by default) of those standard errors is at most ``tolerance``: judged on the
drop alone, the largest delta that passes is often the one whose validation draw was luckiest,
and it loses more on examples the search did not see (the winner's curse).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfmot_wfn.core.paired_accuracy import chosen_run, lower_accuracy, paired_drop_se, pass_threshold
from tfmot_wfn.keras.compat import keras, tf
from tfmot_wfn.keras.fix import fix_weights, strip_fixing
from tfmot_wfn.keras.fixing_callbacks import UpdateFixingStep
from tfmot_wfn.keras.fixing_restart import FixingRestart
from tfmot_wfn.keras.fixing_schedule import PAPER_FRACTIONS, StagedFixing, check_fractions
from tfmot_wfn.keras.report import unique_weights, weight_entropy
from tfmot_wfn.utils.json_report import JsonReport

#: Proxies are used while one costs less than this share of a full run; past it the search
#: bisects with full runs.
PROXY_SHARE = 0.5
#: Candidate deltas, from the paper's smallest (0.0075) to where accuracy usually collapses.
DEFAULT_DELTAS = (0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1)


@dataclasses.dataclass(frozen=True)
class FrontierRow:
    """One run of the search: its delta, compression, validation accuracy and kind."""

    distance: float
    unique_values: int
    entropy_bits: float
    accuracy: float
    source: str  # "proxy" or "full"
    seconds: float
    train_steps: int
    #: Paired standard error of the drop against the float model (same examples; accuracy
    #: units; `paired_drop_se`): NaN when the two passes over the validation data gave
    #: different numbers of examples (a different order is not detected).
    drop_se: float = float("nan")


@dataclasses.dataclass
class DistanceSearch(JsonReport):
    """The result of `search_distance`.

    Attributes:
      distance: the chosen delta (that of ``model``).
      model: the fixed, stripped Keras model of the chosen delta's full run.
      float_accuracy: the float model's validation accuracy.
      accuracy: ``model``'s validation accuracy.
      tolerance: the allowed drop (absolute accuracy).
      within_tolerance: whether ``model``'s drop plus ``margin_se`` paired standard errors
        (``drop_se``) is at most ``tolerance``.
      frontier: every run, proxies and full runs, in the order they ran.
      train_steps / budget_steps: training batches used, and the most allowed.
      seconds: wall time of the search.
      full_run_seconds: what one full run costs alone (``fix_weights`` to ``strip_fixing``,
        tracing included), estimated from the search's first run.
      budget_seconds: the most the runs may take: ``budget * full_run_seconds``.
      drop_se: the paired standard error of ``model``'s drop (accuracy units): when it is
        larger than ``tolerance`` the validation data cannot tell a pass from a failure, and
        which delta passed is partly chance (the search warns).
      margin_se: standard errors added to every full run's drop before it is compared with
        ``tolerance`` (`search_distance`'s argument).
      count_seconds: whether the budget also counted seconds (`search_distance`'s
        argument; False: batches only, the same choices on any machine).
    """

    distance: float
    model: Any
    float_accuracy: float
    accuracy: float
    tolerance: float
    within_tolerance: bool
    frontier: List[FrontierRow]
    train_steps: int
    budget_steps: int
    seconds: float
    full_run_seconds: float = float("nan")
    budget_seconds: float = float("nan")
    drop_se: float = float("nan")
    margin_se: float = 0.0
    count_seconds: bool = True

    def to_dict(self) -> Dict:
        """Everything but the model (``frontier`` as a list of dicts)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        fields["frontier"] = [dataclasses.asdict(r) for r in self.frontier]
        return fields

    def __str__(self) -> str:
        lines = [f"distance search: float accuracy {self.float_accuracy:.4f}, tolerance "
                 f"{self.tolerance:.4f}; chose delta {self.distance:g} (accuracy "
                 f"{self.accuracy:.4f}, {'within' if self.within_tolerance else 'NOT within'} "
                 f"tolerance, drop + {self.margin_se:g} SE); {self.train_steps} of {self.budget_steps} budgeted training steps; "
                 f"{self.seconds:.0f} s, {self.seconds / self.full_run_seconds:.1f}x one full run "
                 f"({self.full_run_seconds:.0f} s)",
                 f"{'delta':>8} {'source':>6} {'unique':>7} {'entropy':>8} {'accuracy':>9} "
                 f"{'drop (pts)':>10} {'± SE':>6}"]
        for r in self.frontier:
            lines.append(f"{r.distance:>8g} {r.source:>6} {r.unique_values:>7d} "
                         f"{r.entropy_bits:>8.3f} {r.accuracy:>9.4f} "
                         f"{100 * (self.float_accuracy - r.accuracy):>10.2f} {100 * r.drop_se:>6.2f}")
        return "\n".join(lines)

    def plot(self, path: Optional[str] = None):
        """Accuracy against unique values for every run (PNG at ``path``); returns the Figure."""
        from tfmot_wfn.apps import plot

        return plot.distance_frontier(self, path)


# ------------------------------------------------------------------ data
def _as_dataset(data, batch_size: int, shuffle: bool, seed: int):
    """A batched ``tf.data.Dataset`` of ``(x, y)`` and its number of batches (None: unknown)."""
    if isinstance(data, tf.data.Dataset):
        cardinality = int(data.cardinality().numpy())
        return data, (cardinality if cardinality > 0 else None)
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("data must be an (x, y) pair of arrays or a batched tf.data.Dataset of "
                        f"(x, y) batches, got {type(data).__name__}")
    x, y = data
    n = len(y)
    if n == 0:
        raise ValueError("the data are empty: pass at least one example")
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(min(n, 10_000), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size), int(math.ceil(n / batch_size))


def _predicted_labels(probabilities: np.ndarray) -> np.ndarray:
    if probabilities.ndim == 1 or probabilities.shape[-1] == 1:
        return (probabilities.reshape(len(probabilities)) > 0.5).astype(np.int64)
    return np.argmax(probabilities, axis=-1)


def _true_labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        return np.argmax(y, axis=-1)
    return y.reshape(len(y)).astype(np.int64)


def _top1_correct(model, data, batch_size: int = 256) -> np.ndarray:
    """Whether ``model``'s top-1 answer is right, per example of ``(x, y)`` arrays or a
    batched dataset, in the data's order."""
    dataset, _ = _as_dataset(data, batch_size, shuffle=False, seed=0)
    right = []
    for x, y in dataset:
        predicted = _predicted_labels(np.asarray(model(x, training=False)))
        right.append(predicted == _true_labels(np.asarray(y)))
    if not right or sum(len(r) for r in right) == 0:
        raise ValueError("the validation data are empty")
    return np.concatenate(right)


def _check_same_order(first: np.ndarray, second: np.ndarray) -> None:
    """Refuse validation data whose two passes under the float model differ (per-example right
    answers ``first`` and ``second``): every run's drop is paired with the float model example
    by example, so the data must yield the same examples in the same order every pass."""
    if not np.array_equal(first, second):
        raise ValueError(
            "validation_data gave other examples, or the same ones in another order, on a second "
            "pass (a dataset shuffled every iteration, or randomly augmented?): every run's accuracy "
            "drop is paired with the float model's example by example. Pass a dataset that yields "
            "the same examples in the same order every pass (no shuffle, or "
            "shuffle(..., reshuffle_each_iteration=False)), or (x, y) arrays")


def top1_accuracy(model, data, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` arrays or a batched dataset of ``(x, y)``."""
    return float(np.mean(_top1_correct(model, data, batch_size)))


def _ties_fail(examples: int, tolerance: float, margin: float) -> bool:
    """Whether ``margin`` standard errors alone fail the smallest tie between different errors
    on ``examples`` examples: the fixed model gets one example right that the float model got
    wrong, and one wrong that it got right (a drop of 0, with `paired_drop_se`'s spread)."""
    float_right, fixed_right = np.zeros(examples, bool), np.zeros(examples, bool)
    float_right[:1], fixed_right[1:2] = True, True
    return bool(margin * paired_drop_se(float_right, fixed_right) > tolerance)  # NaN: False


def _warn_if_coarse(examples: int, tolerance: float, margin: float = 0.0) -> bool:
    """Warn when one validation example weighs more than ``tolerance``: then a delta passes
    only with no more errors than the float model (and, where ``margin`` standard errors fail
    every tie between different errors (`_ties_fail`), only with fewer errors or exactly the
    float model's), and which one does is mostly luck. Whether it warned."""
    coarse = 0.0 < tolerance < 1.0 / examples
    if coarse:
        passes = (f"fewer errors than the float model, or exactly its errors (the margin of {margin:g} "
                  "standard errors fails a tie between different errors)"
                  if _ties_fail(examples, tolerance, margin) else "no more errors than the float model")
        warnings.warn(
            f"the validation data have {examples} examples: one is {100.0 / examples:.2f} points of "
            f"accuracy, more than the tolerance ({100.0 * tolerance:.2f} points), so a delta passes "
            f"only when its model makes {passes}. Pass more validation "
            f"data (at least {int(math.ceil(1.0 / tolerance - 1e-9))} examples for this tolerance) "
            "or a larger tolerance", UserWarning, stacklevel=3)
    return coarse


def _warn_if_unresolved(drop_se: float, tolerance: float) -> None:
    """Warn when the chosen run's drop has a paired standard error above ``tolerance``."""
    if drop_se > tolerance:
        warnings.warn(
            f"the chosen run's accuracy drop has a paired standard error of {100 * drop_se:.2f} "
            f"points on the validation data, more than the tolerance ({100 * tolerance:.2f} "
            "points): the validation data cannot tell a pass from a failure, and which delta "
            "passed is partly chance. Validate on more examples, or check the chosen model on "
            "data the search did not see", UserWarning, stacklevel=3)


# ------------------------------------------------------------------ training
@dataclasses.dataclass(frozen=True)
class _Training:
    """How every run of the search trains (shared settings, fixed for the search)."""

    train: Any  # batched dataset, repeated
    loss: Any
    optimizer_config: Dict
    fix_kwargs: Dict
    seed: int
    #: The schedule's cumulative fixed fractions, one stage each.
    fractions: Tuple[float, ...] = PAPER_FRACTIONS


def _compiled_settings(model, loss, optimizer) -> Tuple[Any, Dict]:
    loss = loss if loss is not None else getattr(model, "loss", None)
    if optimizer is None and getattr(model, "optimizer", None) is not None:
        optimizer = model.optimizer
    if loss is None or optimizer is None:
        raise ValueError("search_distance needs a loss and an optimizer: compile the model first "
                         "(model.compile(optimizer=..., loss=...)) or pass loss= and optimizer=")
    optimizer = keras.optimizers.get(optimizer)
    return loss, keras.optimizers.serialize(optimizer)


class _StepTimer(keras.callbacks.Callback):
    """Wall time of every training batch (the fixing stage, run before the batch, excluded
    when this callback comes after `UpdateFixingStep`)."""

    def __init__(self):
        super().__init__()
        self.seconds: List[float] = []
        self._start = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class _Trainer:
    """The search's one wrapped model: made by `fix_weights` at the first run (which traces
    its training step), put back to its start by `FixingRestart` for every later run."""

    def __init__(self, model, training: _Training):
        self.model, self.training = model, training
        self.fixed = None
        self._restart: Optional[FixingRestart] = None

    def run(self, distance: float, steps_per_stage: int) -> Tuple[Any, int, float, float]:
        """Fix at ``distance`` with ``steps_per_stage`` batches a stage; (stripped model,
        steps, median seconds of a training batch, seconds the first batch took beyond
        the median: the tracing, on the first run)."""
        schedule = StagedFixing(self.training.fractions, steps_per_stage=steps_per_stage)
        if self.fixed is None:
            self.fixed = fix_weights(self.model, fixing_schedule=schedule, distance=distance,
                                     **self.training.fix_kwargs)
            self.fixed.compile(optimizer=keras.optimizers.deserialize(self.training.optimizer_config),
                               loss=self.training.loss)
            self._restart = FixingRestart(self.fixed)
        else:
            self._restart.restart(distance=distance, fixing_schedule=schedule)
        epochs = len(self.training.fractions)  # one epoch a stage; the last fires at its first batch
        timer = _StepTimer()
        self.fixed.fit(self.training.train, epochs=epochs, steps_per_epoch=steps_per_stage, verbose=0,
                       shuffle=False, callbacks=[UpdateFixingStep(verbose=0), timer])
        median = float(np.median(timer.seconds))
        return (strip_fixing(self.fixed), epochs * steps_per_stage, median,
                max(0.0, timer.seconds[0] - median))


class _Costs:
    """The search's cost in seconds, against what one full run costs alone.

    A run costs its wall time: its batches plus an overhead (fixing stages, stripping,
    evaluation; the first run also makes the wrapped model and traces its training step).
    One full run alone (the budget's unit) is the first run's overhead plus ``full_steps``
    batches; once a later full run was measured, at least that run plus the first run's
    tracing (a full run has overheads a proxy lacks, and a run alone costs at least a
    restarted one plus the tracing it skipped). The next run is estimated as the median
    overhead of the later runs of its kind (full or proxy; else of the other kind; until a
    later run was measured: the first run's, less its first batch's excess over the median
    batch, i.e. the tracing) plus its batches. With few batches a stage (a small data set,
    a big model) the overhead dominates and proxies buy little.
    """

    def __init__(self, full_steps: int, budget: float):
        self.full_steps, self.budget = int(full_steps), float(budget)
        self.used = 0.0
        self._alone: Optional[float] = None  # one full run alone, from the first run
        self._first_overhead = self._tracing = 0.0
        self._overheads: Dict[bool, List[float]] = {True: [], False: []}  # later runs: full?
        self._step_seconds: List[float] = []

    def record(self, seconds: float, steps: int, step_seconds: float, tracing: float = 0.0) -> None:
        """A run of ``seconds``: ``steps`` batches of ``step_seconds`` (median), of which the
        first took ``tracing`` seconds more (tracing the step: counted for one run alone,
        not for the runs after it)."""
        self.used += float(seconds)
        overhead = max(0.0, float(seconds) - steps * float(step_seconds))
        self._step_seconds.append(float(step_seconds))
        if self._alone is None:
            self._tracing = min(max(0.0, float(tracing)), overhead)
            self._first_overhead = overhead - self._tracing
            self._alone = overhead + self.full_steps * float(step_seconds)
        else:
            self._overheads[int(steps) >= self.full_steps].append(overhead)

    def _step(self) -> float:
        return float(np.median(self._step_seconds))

    def full_run(self) -> Optional[float]:
        """Estimated seconds of one full run alone (None before any run)."""
        if self._alone is None or not self._overheads[True]:
            return self._alone
        restarted = float(np.median(self._overheads[True])) + self.full_steps * self._step()
        return max(self._alone, restarted + self._tracing)

    def next_run(self, steps: int) -> Optional[float]:
        """Estimated seconds of the next run of ``steps`` batches (None before any run)."""
        if self._alone is None:
            return None
        full = int(steps) >= self.full_steps
        later = self._overheads[full] or self._overheads[not full]
        overhead = float(np.median(later)) if later else self._first_overhead
        return overhead + int(steps) * self._step()

    def budget_seconds(self) -> Optional[float]:
        full = self.full_run()
        return None if full is None else self.budget * full

    def affordable(self, proxy_steps: int, proxies: int, full_runs: int) -> bool:
        """Whether ``proxies`` more proxies of ``proxy_steps`` batches and ``full_runs`` more
        full runs fit in the budget (always, before any run has been timed)."""
        if self._alone is None:
            return True
        cost = proxies * self.next_run(proxy_steps) + full_runs * self.next_run(self.full_steps)
        return self.used + cost <= self.budget_seconds()


class _Runs:
    """Runs fixing jobs for the search and keeps the frontier and what they cost."""

    def __init__(self, model, training: _Training, validation, budget: float, full_steps: int,
                 say: Callable[..., None], float_correct: Optional[np.ndarray] = None,
                 count_seconds: bool = True):
        self.trainer, self.training, self.validation = _Trainer(model, training), training, validation
        #: The float model's right answers on the validation data (each run's drop is paired).
        self.float_correct = float_correct
        self.budget_steps, self.full_steps = int(budget * full_steps), int(full_steps)
        self.say = say
        self.stages = len(training.fractions)
        self.frontier: List[FrontierRow] = []
        self.steps_used = 0
        self.costs = _Costs(full_steps, budget)
        #: False: the budget and the proxies' worth are judged in training batches only.
        self.count_seconds = bool(count_seconds)
        #: Full runs the proxies leave room for: the first, and one more to fall back to a
        #: smaller delta (or climb to a larger one) when the budget holds two.
        self.reserved_full_runs = 2 if budget >= 2 else 1

    def proxies_pay(self, proxy_steps: int) -> bool:
        """Whether a proxy of ``proxy_steps`` batches costs less than `PROXY_SHARE` of a full
        run (estimated): with a small data set the per-run overhead makes a proxy nearly a
        full run, and a full run answers the question for certain. Without ``count_seconds``:
        whether its batches are less than that share of a full run's."""
        if not self.count_seconds:
            return proxy_steps < PROXY_SHARE * self.full_steps
        proxy, full = self.costs.next_run(proxy_steps), self.costs.next_run(self.full_steps)
        return proxy is None or proxy < PROXY_SHARE * full

    def affordable(self, proxy_steps: int = 0, full_runs: int = 1) -> bool:
        """Whether a proxy of ``proxy_steps`` batches (0: none) and then ``full_runs`` full
        runs fit in the budget, in training batches and (with ``count_seconds``) in estimated
        seconds."""
        steps = self.steps_used + proxy_steps + full_runs * self.full_steps
        if steps > self.budget_steps:
            return False
        return not self.count_seconds or self.costs.affordable(proxy_steps, int(proxy_steps > 0),
                                                               full_runs)

    def run(self, distance: float, steps_per_stage: int, source: str) -> Tuple[FrontierRow, Any]:
        keras.utils.set_random_seed(self.training.seed)
        t0 = time.time()
        fixed, steps, step_seconds, tracing = self.trainer.run(distance, steps_per_stage)
        self.steps_used += steps
        row = _measure(fixed, self.validation, self.float_correct, distance, source, t0, steps)
        self.costs.record(row.seconds, steps, step_seconds, tracing)
        self.frontier.append(row)
        self.say(f"  {source} run, delta {distance:g}: accuracy {row.accuracy:.4f}, "
                 f"{row.unique_values} values, {row.entropy_bits:.3f} bits, {row.seconds:.0f} s")
        return row, fixed


def _bisect_proxies(runs: _Runs, candidates: List[float], proxy_stage_steps: int,
                    threshold: float) -> Tuple[int, int, bool]:
    """Bisection by proxies (assuming accuracy falls as delta grows) while they are affordable
    beside `_Runs.reserved_full_runs` full runs and pay (`_Runs.proxies_pay`).

    Returns ``(start, high, paid)``: the index of the largest candidate whose proxy accuracy
    reached ``threshold`` (0 when none did or no proxy ran), the index of the smallest whose
    proxy fell short (``len(candidates)`` when none did), and whether the proxies paid."""
    proxy_cost = runs.stages * proxy_stage_steps
    low, high = -1, len(candidates)  # candidates[low] passed (or none), candidates[high] failed
    if not runs.count_seconds and not runs.proxies_pay(proxy_cost):
        return 0, high, False  # judged in batches, known before any proxy runs
    while high - low > 1 and runs.affordable(proxy_cost, full_runs=runs.reserved_full_runs):
        middle = (low + high + 1) // 2
        row, _ = runs.run(candidates[middle], proxy_stage_steps, "proxy")
        if row.accuracy >= threshold:
            low = middle
        else:
            high = middle
        if not runs.proxies_pay(proxy_cost):
            return max(low, 0), high, False
    return max(low, 0), high, True


def _within(row: FrontierRow, threshold: float, margin: float) -> bool:
    """Whether a full run is within tolerance: its accuracy less ``margin`` standard errors of
    its drop (`lower_accuracy`) reaches ``threshold`` (`pass_threshold`)."""
    return lower_accuracy(row.accuracy, row.drop_se, margin) >= threshold


class _Chosen:
    """The full runs so far, and the one the search keeps (`chosen_run`): the largest-delta one
    within tolerance (`_within`), else the one with the highest accuracy less ``margin``
    standard errors of its drop (with ``margin`` 0, the most accurate)."""

    def __init__(self, threshold: float, margin: float = 0.0):
        self.threshold, self.margin = threshold, float(margin)
        self.runs: List[Tuple[FrontierRow, Any]] = []

    @property
    def passed(self) -> bool:
        """Whether any run so far is within tolerance."""
        return any(_within(row, self.threshold, self.margin) for row, _ in self.runs)

    def add(self, row: FrontierRow, fixed) -> bool:
        """Keeps ``(row, fixed)``; whether the run is within tolerance."""
        self.runs.append((row, fixed))
        return _within(row, self.threshold, self.margin)

    def result(self) -> Tuple[FrontierRow, Any]:
        rows = [row for row, _ in self.runs]
        return self.runs[chosen_run([r.distance for r in rows],
                                    [lower_accuracy(r.accuracy, r.drop_se, self.margin) for r in rows],
                                    self.threshold)]


def _bisect_full_runs(runs: _Runs, candidates: List[float], high: int, full_stage_steps: int,
                      threshold: float, margin: float = 0.0) -> Tuple[FrontierRow, Any]:
    """Bisection by full runs below ``candidates[high]`` (when a proxy costs about as much as
    a full run). While no run has passed, the last affordable one goes to the smallest
    candidate left, the likeliest to pass."""
    low, high = -1, max(int(high), 1)  # the smallest candidate always gets its full run
    chosen = _Chosen(threshold, margin)
    while high - low > 1 and (not chosen.runs or runs.affordable(full_runs=1)):
        last_chance = not chosen.passed and bool(chosen.runs) and not runs.affordable(full_runs=2)
        middle = low + 1 if last_chance else (low + high + 1) // 2
        if chosen.add(*runs.run(candidates[middle], full_stage_steps, "full")):
            low = middle
        else:
            high = middle
    return chosen.result()


def _ceiling(runs: _Runs, candidates: List[float], floor: float) -> int:
    """The largest index a full run may climb to: below the smallest delta whose proxy
    accuracy fell under ``floor`` (far past the cliff), else the last candidate."""
    failed = [candidates.index(r.distance) for r in runs.frontier
              if r.source == "proxy" and r.accuracy < floor]
    return min(failed) - 1 if failed else len(candidates) - 1


def _walk_full_runs(runs: _Runs, candidates: List[float], start: int, ceiling: int,
                    full_stage_steps: int, threshold: float,
                    margin: float = 0.0) -> Tuple[FrontierRow, Any]:
    """Full runs from ``candidates[start]``: up (to ``ceiling`` at most) after a pass, down
    after a failure, until the boundary is found or the budget ends; while none has passed,
    the last affordable run goes to the smallest candidate (as in `_bisect_full_runs`)."""
    chosen = _Chosen(threshold, margin)
    index, direction = start, 0
    while 0 <= index < len(candidates) and (not chosen.runs or runs.affordable(full_runs=1)):
        step = 1 if chosen.add(*runs.run(candidates[index], full_stage_steps, "full")) else -1
        if (direction and step != direction) or index + step > ceiling:
            break  # crossed the boundary, or the next delta's proxy was far past the cliff
        index, direction = index + step, step
        if not chosen.passed and index > 0 and not runs.affordable(full_runs=2):
            index = 0  # no run passed and one is left: the smallest delta, the likeliest to pass
    return chosen.result()


def _search(runs: _Runs, candidates: List[float], proxy_stage_steps: int, full_stage_steps: int,
            threshold: float, proxy_slack: float, margin: float = 0.0) -> Tuple[FrontierRow, Any]:
    """Proxies, then full runs (the module docstring's steps 1 and 2); the chosen run: the
    largest-delta full run within tolerance (its accuracy less ``margin`` standard errors of
    its drop reaches ``threshold``), else the one whose accuracy less those is highest.
    Proxies are judged on their accuracy alone (they only rank deltas)."""
    start_at, high, paid = _bisect_proxies(runs, candidates, proxy_stage_steps, threshold - proxy_slack)
    if not paid:
        return _bisect_full_runs(runs, candidates, high, full_stage_steps, threshold, margin)
    ceiling = max(start_at, _ceiling(runs, candidates, threshold - 5 * proxy_slack))
    return _walk_full_runs(runs, candidates, start_at, ceiling, full_stage_steps, threshold, margin)


def _measure(model, validation, float_correct: np.ndarray, distance: float, source: str,
             started: float, steps: int) -> FrontierRow:
    correct = _top1_correct(model, validation)
    return FrontierRow(distance=float(distance), unique_values=int(unique_weights(model)),
                       entropy_bits=float(weight_entropy(model)),
                       accuracy=float(np.mean(correct)), source=source,
                       seconds=time.time() - started, train_steps=int(steps),
                       drop_se=paired_drop_se(float_correct, correct))


def _check_arguments(tolerance: float, deltas: Sequence[float], epochs_per_stage: int,
                     budget: float, margin_se: float) -> List[float]:
    if not (0.0 <= float(tolerance) < 1.0):
        raise ValueError(f"tolerance is an absolute accuracy drop in [0, 1), got {tolerance!r} "
                         "(0.005 = half a point)")
    if not (math.isfinite(float(margin_se)) and float(margin_se) >= 0.0):
        raise ValueError(f"margin_se is a number of standard errors >= 0, got {margin_se!r} "
                         "(1.0 by default; 0 judges each run on its accuracy alone)")
    if int(epochs_per_stage) < 1:
        raise ValueError(f"epochs_per_stage must be >= 1, got {epochs_per_stage!r}")
    if not float(budget) >= 1.0:
        raise ValueError(f"budget must be >= 1 (times one full run), got {budget!r}")
    values = sorted({float(d) for d in deltas})
    if not values or values[0] <= 0.0:
        raise ValueError(f"deltas must be positive distances, got {list(deltas)!r}")
    return values


def search_distance(
    model,
    train_data,
    validation_data,
    tolerance: float = 0.005,
    *,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    epochs_per_stage: int = 1,
    fractions: Sequence[float] = PAPER_FRACTIONS,
    batch_size: int = 32,
    loss=None,
    optimizer=None,
    budget: float = 3.0,
    proxy_steps: Optional[int] = None,
    proxy_slack: float = 0.02,
    margin_se: float = 1.0,
    seed: int = 0,
    count_seconds: bool = True,
    verbose: int = 1,
    **fix_kwargs,
) -> DistanceSearch:
    """The largest ``distance`` whose fixed model stays within ``tolerance`` of the float model.

    Args:
      model: the trained float Keras model (not changed). Its compiled loss and optimizer
        settings are used (a fresh optimizer for every run) unless ``loss``/``optimizer`` are given.
      train_data, validation_data: ``(x, y)`` arrays, or batched ``tf.data.Dataset``s of
        ``(x, y)``. A training dataset must know its cardinality or be repeated by you (then
        pass a finite one: the search repeats it itself). A validation dataset must yield the
        same examples in the same order every pass (each drop is paired example by example;
        the search checks it with a second pass of the float model).
      tolerance: the allowed accuracy drop, absolute (0.005 = half a point).
      deltas: the candidate distances.
      epochs_per_stage: epochs of re-training between stages in the full runs.
      fractions: the schedule's cumulative fixed fractions (`StagedFixing`; default the
        paper's ten stages): every run, proxy or full, uses this schedule.
      batch_size: for ``(x, y)`` arrays.
      budget: all runs together train at most this many times the batches of one full run,
        and take at most this many times the seconds one full run takes alone (estimated
        from the first run: its overhead, tracing included, plus a full run's batches; at
        least a measured later full run plus that tracing).
      proxy_steps: batches a stage in a proxy run (default: a fifth of an epoch, at least 1).
      proxy_slack: extra accuracy drop a proxy may show and still be tried in a full run.
      margin_se: a full run is within ``tolerance`` when its drop plus this many paired
        standard errors of the drop is at most ``tolerance`` (1.0: about 84% one-sided
        confidence that the drop on the examples the validation data stand for is within
        it); 0 judges each run on the validation accuracy alone, which favours the run with
        the luckiest draw (the largest delta that passes by chance).
      seed: seeds Keras (weights order, shuffling) for every run.
      count_seconds: also hold the runs to ``budget`` times one full run's seconds, and run
        proxies only while one costs less than half a full run in seconds. False: both are
        judged in training batches alone, so the same model, data and ``seed`` try the same
        deltas on any machine (the seconds depend on its speed and load); the search may then
        take longer than ``budget`` full runs where per-run overheads are large.
      verbose: 1 prints a line per run.
      **fix_kwargs: passed to `fix_weights` (``regularization``, ``fix_batchnorm``, ...).

    Returns:
      A `DistanceSearch`.
    """
    if "distance" in fix_kwargs or "fixing_schedule" in fix_kwargs:
        raise TypeError("search_distance chooses distance and the schedule itself; do not pass "
                        "distance= or fixing_schedule=")
    candidates = _check_arguments(tolerance, deltas, epochs_per_stage, budget, margin_se)
    say: Callable[..., None] = print if verbose else (lambda *a, **k: None)
    started = time.time()
    loss, optimizer_config = _compiled_settings(model, loss, optimizer)
    train, steps_per_epoch = _as_dataset(train_data, batch_size, shuffle=True, seed=seed)
    if steps_per_epoch is None:
        raise ValueError("the training dataset's length is unknown: pass a finite dataset "
                         "(dataset.apply(tf.data.experimental.assert_cardinality(n))) or arrays")
    training = _Training(train=train.repeat(), loss=loss,
                         optimizer_config=optimizer_config, fix_kwargs=dict(fix_kwargs),
                         seed=seed, fractions=check_fractions(fractions))
    full_stage_steps = epochs_per_stage * steps_per_epoch
    float_correct = _top1_correct(model, validation_data)
    if isinstance(validation_data, tf.data.Dataset):  # arrays are read in order
        _check_same_order(float_correct, _top1_correct(model, validation_data))
    float_accuracy = float(np.mean(float_correct))
    coarse = _warn_if_coarse(len(float_correct), tolerance, margin_se)
    runs = _Runs(model, training, validation_data, budget, len(training.fractions) * full_stage_steps,
                 say, float_correct, count_seconds)
    say(f"float accuracy {float_accuracy:.4f}; tolerance {tolerance}; {len(candidates)} "
        f"candidate deltas; budget {runs.budget_steps} training steps ({budget:g} full runs)")

    proxy_stage_steps = int(proxy_steps or max(1, steps_per_epoch // 5))
    threshold = pass_threshold(float_accuracy, tolerance)
    row, fixed = _search(runs, candidates, proxy_stage_steps, full_stage_steps, threshold, proxy_slack,
                         margin_se)
    if not coarse:  # a coarse validation set was warned about already
        _warn_if_unresolved(row.drop_se, tolerance)
    return DistanceSearch(
        distance=row.distance, model=fixed, float_accuracy=float_accuracy, accuracy=row.accuracy,
        tolerance=float(tolerance),
        within_tolerance=_within(row, threshold, margin_se),
        frontier=runs.frontier, train_steps=runs.steps_used, budget_steps=runs.budget_steps,
        seconds=time.time() - started, full_run_seconds=float(runs.costs.full_run()),
        budget_seconds=float(runs.costs.budget_seconds()), drop_se=row.drop_se,
        margin_se=float(margin_se), count_seconds=runs.count_seconds)


__all__ = ["DEFAULT_DELTAS", "DistanceSearch", "FrontierRow", "paired_drop_se", "search_distance",
           "top1_accuracy"]
