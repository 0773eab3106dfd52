"""Training-step time of several models, alternating step by step in one process.

Used by `benchmarks/run.py` (Keras 3: plain vs `fix_weights`) and by
`benchmarks/peers_tf_keras.py` (tf_keras: plain vs tfmot `prune_low_magnitude`), so
that both ratios are measured the same way:

* each model is built and compiled and gets its own `CallbackList` (its callbacks,
  e.g. `UpdateFixingStep` or `UpdatePruningStep`) and its own iterator over the same
  batches; ``warmup_steps`` steps of each run first (tracing, a first fixing stage);
* then the models take turns, ONE training step each, the order rotating from step to
  step: a step is the callbacks' ``on_train_batch_begin`` plus the model's
  ``train_function`` (what `fit` runs per batch), timed until the optimizer's step
  counter reads back (the step has finished). Neighbouring steps of two models run
  milliseconds apart, so the load of a shared machine hits both alike (timing one `fit`
  epoch per model in turn let the load change between models; RESULTS.md and
  benchmarks/README.md say by how much);
* with a ``base`` model, each other model's ``paired_ratio`` is the median over the
  steps of its step time over the base model's step of the same turn (the two ran next
  to each other);
* the median over all steps is reported, with the quartiles and the medians of
  ``blocks`` consecutive blocks of steps (``block_medians_ms``: block i of every model
  ran in the same stretch of time, so their ratios pair up); ``first_step_ms`` is the
  time from ``on_train_begin`` to the end of the first batch of one short `fit` call
  made afterwards (the model already trained, so a retrace there is one that every
  further `fit` call pays).

`fit`'s own loop (its callback list, the progress bar, `on_train_batch_end`) is the same
for every model and is left out, so the plain step is shorter than `fit`'s and a fixed
extra cost is a larger share of it.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np


def _tile(a: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // len(a))
    return np.concatenate([a] * reps)[:n] if reps > 1 else a[:n]


def _batches(tf, x: np.ndarray, y: np.ndarray, batch: int):
    """An endless iterator over the batches of ``(x, y)``, in order."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch, drop_remainder=True)
    return iter(dataset)


def alternating_step_times(
    factories: Dict[str, Callable[[], Tuple[object, List]]],
    x: np.ndarray,
    y: np.ndarray,
    batch: int,
    steps: int,
    blocks: int = 8,
    warmup_steps: int = 5,
    base: Optional[str] = None,
) -> Dict[str, Dict]:
    """``{name: {"median_ms", "p25_ms", "p75_ms", "n", "block_medians_ms", "first_step_ms"}}``,
    and ``"paired_ratio"`` for every model but ``base`` when one is named.

    ``factories``: name -> function returning ``(compiled model, extra callbacks)``.
    ``steps``: timed steps per model; ``blocks``: how many consecutive blocks of them get a
    median of their own (``block_medians_ms``); ``base``: the factory the others are paired
    with, step by step.
    """
    import tensorflow as tf

    if steps < blocks:
        raise ValueError(f"steps ({steps}) must be at least blocks ({blocks})")
    if base is not None and base not in factories:
        raise ValueError(f"base {base!r} is not one of the factories {sorted(factories)}")
    built = {name: make() for name, make in factories.items()}
    keras_module = _keras_of(next(iter(built.values()))[0])
    runs = {}
    for name, (model, callbacks) in built.items():
        callback_list = keras_module.callbacks.CallbackList(
            list(callbacks), add_history=False, add_progbar=False, model=model,
            epochs=1, steps=warmup_steps + steps, verbose=0)
        model.make_train_function()
        callback_list.on_train_begin()
        runs[name] = (model, callback_list, _batches(tf, x, y, batch))
    names = list(built)
    seconds: Dict[str, List[float]] = {name: [] for name in names}
    for step in range(warmup_steps + steps):
        order = names[step % len(names):] + names[:step % len(names)]
        for name in order:
            model, callback_list, iterator = runs[name]
            start = time.perf_counter()
            callback_list.on_train_batch_begin(step)
            model.train_function(iterator)
            model.optimizer.iterations.numpy()  # waits for the step to finish
            if step >= warmup_steps:
                seconds[name].append(time.perf_counter() - start)
    for _, callback_list, _ in runs.values():
        callback_list.on_train_end()
    first = _first_fit_steps(keras_module, built, x, y, batch)
    out = {}
    for name, values in seconds.items():
        v = np.asarray(values) * 1000.0
        out[name] = {"median_ms": float(np.median(v)), "p25_ms": float(np.percentile(v, 25)),
                     "p75_ms": float(np.percentile(v, 75)), "n": int(v.size),
                     "block_medians_ms": [round(float(np.median(b)), 4) for b in np.array_split(v, blocks)],
                     "first_step_ms": first[name]}
        if base is not None and name != base:
            out[name]["paired_ratio"] = float(np.median(v / (np.asarray(seconds[base]) * 1000.0)))
    return out


def _first_fit_steps(keras_module, built, x, y, batch) -> Dict[str, float]:
    """Per model, ms from ``on_train_begin`` to the end of the first batch of a 3-batch `fit`."""

    class FirstStep(keras_module.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.begin, self.end = time.perf_counter(), None

        def on_train_batch_end(self, batch, logs=None):
            if self.end is None:
                self.end = time.perf_counter()

    xs, ys = _tile(x, 3 * batch), _tile(y, 3 * batch)
    out = {}
    for name, (model, callbacks) in built.items():
        timer = FirstStep()
        model.fit(xs, ys, batch_size=batch, epochs=1, verbose=0, shuffle=False,
                  callbacks=list(callbacks) + [timer])
        out[name] = (timer.end - timer.begin) * 1000.0
    return out


def _keras_of(model):
    """The Keras module (keras 3 or tf_keras) a model belongs to."""
    module = type(model).__module__.split(".")[0]
    if module == "tf_keras":
        import tf_keras

        return tf_keras
    import keras

    return keras
