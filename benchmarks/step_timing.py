"""Median training-step time of several models, interleaved in one process.

Used by `benchmarks/run.py` (Keras 3: plain vs `fix_weights`) and by
`benchmarks/peers_tf_keras.py` (tf_keras: plain vs tfmot `prune_low_magnitude`), so
that both ratios are measured the same way:

* each model is built and compiled; no separate warm-up `fit` (the first `fit` of a
  model traces its train function, later ones reuse it, and the first intervals of
  every `fit` are dropped), unless ``warmup_steps`` asks for one;
* ``rounds`` rounds, each running one `fit` epoch of ``steps`` batches per model,
  the order of the models rotating from round to round, so background load on a
  shared machine hits all of them alike;
* a step's time is the wall time between two consecutive ``on_train_batch_end`` calls
  (the timer is the last callback): the train function plus every callback's
  per-batch work plus the input pipeline, i.e. what `fit` costs per step. The first
  two intervals of every `fit` are dropped (retracing, iterator start-up);
* the median over all kept intervals is reported, with the quartiles and the
  per-round medians; ``first_step_ms`` is the time from ``on_train_begin`` to the end
  of the first batch of the last round's `fit` call (the model already trained once,
  so a retrace there is one that every further `fit` call pays).
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Tuple

import numpy as np


def _tile(a: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // len(a))
    return np.concatenate([a] * reps)[:n] if reps > 1 else a[:n]


def interleaved_step_times(
    factories: Dict[str, Callable[[], Tuple[object, List]]],
    x: np.ndarray,
    y: np.ndarray,
    batch: int,
    steps: int,
    rounds: int,
    warmup_steps: int = 0,
) -> Dict[str, Dict]:
    """``{name: {"median_ms", "p25_ms", "p75_ms", "n", "round_medians_ms"}}``.

    ``factories``: name -> function returning ``(compiled model, extra callbacks)``.
    """
    built = {name: make() for name, make in factories.items()}
    first_model = next(iter(built.values()))[0]
    keras_module = _keras_of(first_model)

    class StepTimer(keras_module.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends: List[float] = []
            self.begin = 0.0

        def on_train_begin(self, logs=None):
            self.begin = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    xs, ys = _tile(x, steps * batch), _tile(y, steps * batch)
    for model, callbacks in (built.values() if warmup_steps else ()):  # optional warm-up
        model.fit(xs[:warmup_steps * batch], ys[:warmup_steps * batch], batch_size=batch,
                  epochs=1, verbose=0, shuffle=False, callbacks=list(callbacks))
    samples: Dict[str, List[float]] = {name: [] for name in built}
    per_round: Dict[str, List[float]] = {name: [] for name in built}
    first: Dict[str, List[float]] = {name: [] for name in built}
    names = list(built)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            model, callbacks = built[name]
            timer = StepTimer()
            model.fit(xs, ys, batch_size=batch, epochs=1, verbose=0, shuffle=False,
                      callbacks=list(callbacks) + [timer])
            intervals = np.diff(np.asarray(timer.ends))[2:] * 1000.0
            samples[name].extend(intervals.tolist())
            per_round[name].append(float(np.median(intervals)))
            first[name].append((timer.ends[0] - timer.begin) * 1000.0)
    out = {}
    for name, values in samples.items():
        v = np.asarray(values)
        out[name] = {"median_ms": float(np.median(v)), "p25_ms": float(np.percentile(v, 25)),
                     "p75_ms": float(np.percentile(v, 75)), "n": int(v.size),
                     "round_medians_ms": [round(m, 4) for m in per_round[name]],
                     "first_step_ms": float(first[name][-1])}
    return out


def _keras_of(model):
    """The Keras module (keras 3 or tf_keras) a model belongs to."""
    module = type(model).__module__.split(".")[0]
    if module == "tf_keras":
        import tf_keras

        return tf_keras
    import keras

    return keras
