"""Callbacks: `UpdateFixingStep` (required by fit) and `FixingSummaries` (TensorBoard)."""

from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from tfmot_wfn.core.weight_statistics import entropy_bits, value_counts
from tfmot_wfn.keras import regularizer
from tfmot_wfn.keras.compat import keras, tf
from tfmot_wfn.keras.network_fixing import StageSummary, run_fixing_stage, wrappers_of


class UpdateFixingStep(keras.callbacks.Callback):
    """Advances the fixing step and runs the whole-network fixing stages.

    Required when training a model made by `fix_weights`, like tfmot's
    `UpdatePruningStep`. At every step where the wrappers' schedule says so it
    fixes the scheduled fraction of ALL fixable weights of the network at once
    (one greedy stage, one shared palette), in the Python process that drives
    training: once per stage, not once per replica.

    ```python
    model.fit(x, y, epochs=10, callbacks=[tfmot_wfn.UpdateFixingStep()])
    ```

    Custom training loop:

    ```python
    cb = tfmot_wfn.UpdateFixingStep()
    cb.set_model(model)
    cb.on_train_begin()
    for step, (x, y) in enumerate(dataset):
        cb.on_train_batch_begin(step)
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
            loss = tfmot_wfn.regularized_loss(model, loss)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    cb.on_train_end()
    ```

    Args:
      verbose: 1 prints one line per fixing stage; 0 is silent.
    """

    def __init__(self, verbose: int = 1):
        super().__init__()
        self.verbose = int(verbose)
        self.history: List[StageSummary] = []
        self._wrappers = []
        self._step: Optional[int] = None

    def _collect(self):
        wrappers = wrappers_of(self.model)
        if not wrappers:
            raise ValueError(
                "UpdateFixingStep found no WeightFixingWrapper in the model; build it with "
                "tfmot_wfn.fix_weights(model) first.")
        return wrappers

    def on_train_begin(self, logs=None):
        self._wrappers = self._collect()
        steps = (self.params or {}).get("steps")
        schedule = self._wrappers[0].fixing_schedule
        schedule.resolve(steps)
        for w in self._wrappers:
            if w.fixing_schedule is not schedule:
                w.fixing_schedule.resolve(steps)
            w._fixing_callback_attached = True
        if regularizer.install(self.model) and getattr(self.model, "train_function", None):
            # fit() made its train function before calling on_train_begin and calls
            # it right after: rebuild it (setting it to None would break fit) so it
            # traces the regularised loss.
            self.model.make_train_function(force=True)
        self._step = max(0, int(self._wrappers[0].fixing_step.numpy()))
        self._sync_step()

    def _sync_step(self):
        for w in self._wrappers:
            w.fixing_step.assign(self._step)

    @property
    def step(self) -> int:
        """The next training step the schedule will see."""
        return -1 if self._step is None else self._step

    def on_train_batch_begin(self, batch, logs=None):
        if self._step is None:
            self.on_train_begin()
        schedule = self._wrappers[0].fixing_schedule
        should_fix, fraction = schedule(self._step)
        if should_fix:
            distance = self._wrappers[0].distance * schedule.distance_multiplier(self._step)
            summary = run_fixing_stage(self._wrappers, fraction, distance)
            self.history.append(summary)
            if self.verbose:
                print(f"\n[tfmot_wfn] step {self._step}: fixed {summary.fixed}/{summary.total} "
                      f"({summary.fixed / summary.total:.2%}) at distance {distance:.4g}; "
                      f"palette {summary.palette_size} values")
        self._step += 1
        self._sync_step()

    def on_train_end(self, logs=None):
        for w in self._wrappers:
            w._fixing_callback_attached = False
        if self.model is not None and getattr(self.model, "train_function", None) is not None:
            # The "missing UpdateFixingStep" check runs when fit traces its train
            # function; drop the cached one so a later fit without this callback
            # retraces and raises instead of silently training without fixing.
            self.model.train_function = None


def network_statistics(model) -> dict:
    """Fixed fraction, unique values and entropy of the network's fixable weights."""
    wrappers = wrappers_of(model)
    values = np.concatenate([a.ravel() for w in wrappers for a in w.effective_numpy()])
    masks = np.concatenate([m.ravel() for w in wrappers for m in w.mask_numpy()])
    fixed_values = values[masks]
    return {
        "fixed_fraction": float(masks.mean()) if masks.size else 0.0,
        "unique_values": int(value_counts(values)[0].size),
        "palette_size": int(value_counts(fixed_values)[0].size),
        "entropy_bits": entropy_bits(values),
    }


def _write_scalar(tag: str, value: float, step: int) -> None:
    """`tf.summary.scalar` without needing the tensorboard package.

    TensorFlow's `tf.summary.scalar` is implemented by tensorboard and raises
    TBNotInstalledError without it; write the same summary (float32 tensor
    tagged for the "scalars" plugin) with the core `tf.summary.write`.
    """
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=metadata)


class FixingSummaries(keras.callbacks.Callback):
    """Writes TensorBoard scalars at the end of every epoch.

    Scalars: ``fixing/fixed_fraction``, ``fixing/unique_values``,
    ``fixing/palette_size``, ``fixing/entropy_bits``, ``fixing/regularizer``.

    Args:
      log_dir: TensorBoard log directory (a ``fixing`` sub-folder is written).
    """

    def __init__(self, log_dir: str):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"log_dir must be a path, got {type(log_dir).__name__}")
        self.log_dir = os.fspath(log_dir)
        self._writer = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "fixing"))

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            self.on_train_begin()
        stats = network_statistics(self.model)
        reg = float(regularizer.regularization_value(self.model).numpy())
        with self._writer.as_default():
            for name, value in stats.items():
                _write_scalar(f"fixing/{name}", value, step=epoch)
            _write_scalar("fixing/regularizer", reg, step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
