"""Callbacks: `UpdateFixingStep` (required by fit) and `FixingSummaries` (TensorBoard)."""

from __future__ import annotations

import hashlib
import numbers
import os
import time
import warnings
from typing import List, Optional

import numpy as np

from tfmot_wfn.core.fixing_rules import stage_distance
from tfmot_wfn.keras import regularizer
from tfmot_wfn.keras.compat import (
    build_optimizer,
    callback_params,
    keras,
    optimizer_built,
    optimizer_variables,
    scalar_assigner,
    steps_per_execution,
    tf,
    variable_path,
)
from tfmot_wfn.keras.network import FixingNetwork, StageSummary
from tfmot_wfn.utils.finite import count_nonfinite
from tfmot_wfn.utils.validation import check_bool


class UpdateFixingStep(keras.callbacks.Callback):
    """Advances the fixing step and runs the whole-network fixing stages.

    Required when training a model made by `fix_weights`, like tfmot's
    `UpdatePruningStep`. At every step where the wrappers' schedule says so it
    fixes the scheduled fraction of ALL fixable weights of the network at once
    (one greedy stage, one shared palette), in the Python process that drives
    training: once per stage, not once per replica. A model that never trained
    with it refuses to train (`tf.errors.InvalidArgumentError`): the wrappers'
    `fixing_step` starts at -1 and only this callback advances it.

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

    The schedule position is the wrappers' `fixing_step` variable, saved with the
    model and restored by `keras.callbacks.BackupAndRestore` or a checkpoint: it is
    read again at the first batch of every `fit`, whatever the order of the
    callbacks, so a resumed run continues the schedule where its weights were saved.

    Args:
      verbose: 1 prints one line per fixing stage; 0 is silent.
      check_finite: at the first batch of every `fit` and at the end of every epoch,
        raise `FloatingPointError` (naming the layer) if a free weight became NaN or
        Inf, instead of training on and failing at the next stage. One
        `is_finite` reduction per weight; put this callback before
        `BackupAndRestore` / `ModelCheckpoint` so a diverged state is never saved.
      fresh_optimizer: right after every fixing stage, put the state of
        ``model.optimizer`` back to what a freshly built copy of it holds (Adam:
        zero moments; ``iterations`` 0, so Adam's bias correction restarts as in a
        new optimizer), as the reference code does by making a new optimizer per
        stage (the default: measured in ``benchmarks/training_ablation.md``, it ends
        with lower entropy at the same accuracy). The learning-rate variable keeps
        its current value (so `ReduceLROnPlateau` / `LearningRateScheduler` settings
        survive). With a `LearningRateSchedule`, which reads ``iterations``,
        ``iterations`` keeps counting (the schedule goes on) and only the other
        state (moments) is reset. A model without an optimizer (a custom loop that
        keeps it elsewhere) has nothing to reset: a warning says so. False: the
        optimizer state carries over from stage to stage (tfmot_wfn 0.1).
    """

    def __init__(self, verbose: int = 1, check_finite: bool = True, fresh_optimizer: bool = True):
        super().__init__()
        if isinstance(verbose, bool) or not isinstance(verbose, numbers.Integral):
            raise TypeError(f"verbose must be 0 or 1, got {type(verbose).__name__} {verbose!r}")
        self.verbose = int(verbose)
        self.check_finite = check_bool("check_finite", check_finite)
        self.fresh_optimizer = check_bool("fresh_optimizer", fresh_optimizer)
        self.history: List[StageSummary] = []
        self._network: Optional[FixingNetwork] = None
        self._wrappers = []
        # Writes the step into the wrappers' variables: (their ids, the function).
        self._step_writer = ([], None)
        self._step: Optional[int] = None
        self._read_step = True

    def _collect(self) -> FixingNetwork:
        network = FixingNetwork.find(self.model)
        if network is None:
            raise ValueError(
                "UpdateFixingStep found no WeightFixingWrapper in the model; build it with "
                "tfmot_wfn.fix_weights(model) first.")
        return network

    def on_train_begin(self, logs=None):
        self._network = self._collect()  # refuses wrappers with different settings
        unbuilt = [w.name for w in self._network.wrappers if not w.built]
        if unbuilt:  # a subclassed model is built only when fit traces its first step
            raise ValueError(
                f"the WeightFixingWrappers {unbuilt} are not built yet, so their first fixing "
                "stage (at the first batch) has no weights to fix. Call the model on a batch "
                "once before fit (model(x[:1])), as a subclassed model whose layers are "
                "wrapped one by one needs.")
        self._wrappers = list(self._network.wrappers)
        steps = [w.fixing_step for w in self._wrappers]
        key = [id(v) for v in steps]  # the writer holds the variables: no id is reused
        if self._step_writer[0] != key:  # made once per set of wrappers, kept across fits
            self._step_writer = (key, scalar_assigner(steps))
        self._network.resolve_schedules(callback_params(self).get("steps"))
        if self.fresh_optimizer and getattr(self.model, "optimizer", None) is None:
            warnings.warn(
                "UpdateFixingStep(fresh_optimizer=True) resets model.optimizer after every stage, "
                "but the model has none, so nothing is reset: set model.optimizer to the optimizer "
                "that trains it (as tfmot's UpdatePruningStep also needs in a custom loop), or pass "
                "fresh_optimizer=False.", stacklevel=2)
        if regularizer.install(self.model) and getattr(self.model, "train_function", None):
            # A model that fix_weights did not make (loaded, or wrapped layer by layer):
            # fit() made its train function before calling on_train_begin and calls
            # it right after: rebuild it (setting it to None would break fit) so it
            # traces the regularised loss. Later fits reuse it.
            self.model.make_train_function(force=True)
        self._step = max(0, self._network.stored_step())
        # BackupAndRestore may restore the variables after this (its on_train_begin
        # can run after ours): read the step again at the first batch.
        self._read_step = True

    def _refresh_regularizer(self):
        self._network.refresh_regularizer()

    def _sync_step(self):
        """Write the step into every wrapper's `fixing_step` (saved with the model)."""
        self._step_writer[1](self._step)

    @property
    def step(self) -> int:
        """The next training step the schedule will see."""
        return -1 if self._step is None else self._step

    def on_train_batch_begin(self, batch, logs=None):
        if self._step is None:
            self.on_train_begin()
        if self._read_step:
            self._read_step = False
            self._step = max(0, self._network.stored_step())
            # The regulariser's table follows the palette and masks (a restored model's too).
            self._refresh_regularizer()
            if self.check_finite:
                check_finite_weights(self._wrappers, "at the start of training")
            check_workers_agree(self.model, self._wrappers, "at the start of training")
        # With fit(steps_per_execution=k) Keras calls this once per k steps: run the
        # stages scheduled within those k steps now, and count steps, not calls.
        for _ in range(self._steps_in_call(batch)):
            self._run_scheduled_stage()
            self._step += 1
        self._sync_step()

    def _steps_in_call(self, batch) -> int:
        """Training steps one batch callback of `fit` stands for (1 in custom loops)."""
        params = callback_params(self)
        k = steps_per_execution(self.model)
        if "steps" not in params or not isinstance(k, numbers.Integral) or k <= 1:
            return 1  # not called by fit, or one step per call
        steps = params["steps"]
        if steps and isinstance(batch, numbers.Integral):
            return max(1, min(int(k), int(steps) - int(batch)))  # an epoch's last call is shorter
        return int(k)

    def _run_scheduled_stage(self):
        schedule = self._network.fixing_schedule
        should_fix, fraction = schedule(self._step)
        if should_fix:
            distance = stage_distance(self._network.rule, self._network.distance,
                                      schedule.distance_multiplier(self._step))
            if self.verbose:  # a stage on a big model takes seconds: say so before it runs
                print(f"\n[tfmot_wfn] step {self._step}: fixing stage "
                      f"{schedule.stage_at(self._step) + 1} "
                      f"({fraction:.2%} of the weights, distance {distance:.4g}) ...", flush=True)
            start = time.perf_counter()
            summary = self._network.run_fixing_stage(fraction, distance)
            if self.fresh_optimizer and getattr(self.model, "optimizer", None) is not None:
                reset_optimizer(self.model.optimizer, self.model.trainable_variables)
            check_workers_agree(self.model, self._wrappers, f"after the stage at step {self._step}")
            self.history.append(summary)
            if self.verbose:
                print(f"[tfmot_wfn] step {self._step}: fixed {summary.fixed}/{summary.total} "
                      f"({summary.fixed / summary.total:.2%}) at distance {distance:.4g}; "
                      f"palette {summary.palette_size} values "
                      f"({time.perf_counter() - start:.1f} s)", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        if self.check_finite and self._wrappers:
            check_finite_weights(self._wrappers, f"at the end of epoch {epoch}")




def has_schedule(optimizer) -> bool:
    """Whether `optimizer`'s learning rate is a `LearningRateSchedule` (it reads ``iterations``)."""
    return isinstance(optimizer.get_config().get("learning_rate"), dict)


def reset_optimizer(optimizer, variables) -> None:
    """Give `optimizer` the state of a fresh copy of it built on `variables`.

    Every optimizer variable (slots, ``iterations``, accumulators) is assigned the value
    it has in ``type(optimizer).from_config(optimizer.get_config())`` right after
    ``build(variables)``, except the learning-rate variable, which keeps its value, and
    ``iterations`` when the learning rate is a schedule (which reads it). A not yet built
    optimizer is already fresh and is left alone. RuntimeError if the copy's variables do
    not line up with the optimizer's (it was built on other variables than `variables`).
    """
    if not optimizer_built(optimizer):
        return
    fresh = type(optimizer).from_config(optimizer.get_config())
    build_optimizer(fresh, variables)
    old, new = optimizer_variables(optimizer), optimizer_variables(fresh)
    if len(old) != len(new) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(old, new)):
        raise RuntimeError(
            f"fresh_optimizer: {type(optimizer).__name__} holds {len(old)} variables, a fresh copy "
            f"built on the model's {len(variables)} trainable variables holds {len(new)} (or their "
            "shapes differ): the optimizer was built on other variables. Apply it to "
            "model.trainable_variables, or use UpdateFixingStep(fresh_optimizer=False).")
    keep = [optimizer.learning_rate]
    if has_schedule(optimizer):
        keep.append(optimizer.iterations)
    for a, b in zip(old, new):
        if not any(a is k for k in keep):
            a.assign(b.numpy())


def _worker_count(strategy) -> int:
    if strategy.num_replicas_in_sync <= 1:
        return 1
    try:
        local = len(strategy.extended.worker_devices) or 1
    except (AttributeError, RuntimeError, NotImplementedError):
        return 1
    return max(1, strategy.num_replicas_in_sync // local)


def _state_digest(wrappers) -> float:
    """52 bits of a SHA-256 of the fixing state and the effective weights (exact in float64)."""
    h = hashlib.sha256()
    for w in wrappers:
        for array in w.effective_numpy() + w.mask_numpy():
            h.update(np.ascontiguousarray(array).tobytes())
        h.update(w.palette.numpy().tobytes())
        h.update(np.int64(w.fixing_step.numpy()).tobytes())
    return float(int(h.hexdigest()[:13], 16))


def check_workers_agree(model, wrappers, when: str = "") -> None:
    """Under a multi-worker strategy, refuse to go on if the workers' states differ.

    Each worker runs the (deterministic) fixing stage itself on its own copy of the
    weights, so all of them must hold identical weights: synchronous training keeps
    them equal once they start equal. This gathers one 52-bit digest per replica
    (a scalar all-gather, at the first batch of `fit` and after each stage) and
    raises `RuntimeError` if they differ. A no-op on one worker.
    """
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None or _worker_count(strategy) <= 1:
        return
    digest = _state_digest(wrappers)
    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant([digest], tf.float64))
    gathered = np.asarray(strategy.gather(values, axis=0))
    if np.any(gathered != gathered[0]):
        raise RuntimeError(
            f"The workers hold different weights or fixing states {when} (digests "
            f"{sorted(set(gathered.tolist()))}), so their fixing stages would choose different "
            "palettes. Build or load the float model identically on every worker (same seed, "
            "or the same checkpoint) before fix_weights, and train synchronously "
            "(MultiWorkerMirroredStrategy).")


def check_finite_weights(wrappers, when: str = "") -> None:
    """Raise `FloatingPointError` naming the first layer whose free weights hold NaN or Inf.

    One `is_finite` reduction per weight on the device; values are only copied to
    the host to describe a failure.
    """
    for wrapper in wrappers:
        for i, v in enumerate(wrapper.fixable_variables):
            if bool(tf.reduce_all(tf.math.is_finite(wrapper.effective_weight(i)))):
                continue
            values = wrapper.effective_numpy()[i]
            bad = count_nonfinite(values)
            raise FloatingPointError(
                f"{bad} of {values.size} values of weight {variable_path(v)!r} in layer "
                f"{wrapper.layer.name!r} became NaN or Inf {when}. Training diverged: lower "
                "the learning rate or clip gradients (e.g. optimizer clipnorm=0.5), then "
                "resume from the last checkpoint saved before this point.")


def network_statistics(model) -> dict:
    """Fixed fraction, unique values, palette size and entropy (`FixingNetwork.statistics`)."""
    stats = FixingNetwork.of(model).statistics()
    return {
        "fixed_fraction": stats.fixed_fraction,
        "unique_values": stats.unique_values,
        "palette_size": stats.palette_size,
        "entropy_bits": stats.entropy_bits,
    }


class FixingSummaries(keras.callbacks.Callback):
    """Writes TensorBoard summaries of the fixing at the end of every epoch.

    Scalars: ``fixing/fixed_fraction``, ``fixing/unique_values``,
    ``fixing/palette_size``, ``fixing/entropy_bits``, ``fixing/regularizer``, and
    ``fixing/layer_fixed_fraction/<layer>`` (the fixed fraction of each wrapped
    layer). Histogram: ``fixing/palette_usage``, how many fixed weights hold each
    palette value (one bucket per value; from the first stage on). Text:
    ``fixing/rule``, the fixing rule and distance. See
    `tfmot_wfn.keras.summaries` to write the same from a custom training loop.

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
        from tfmot_wfn.keras import summaries

        stats = network_statistics(self.model)
        reg = float(regularizer.regularization_value(self.model).numpy())
        with self._writer.as_default():
            for name, value in stats.items():
                summaries.write_scalar(f"fixing/{name}", value, step=epoch)
            summaries.write_scalar("fixing/regularizer", reg, step=epoch)
            summaries.write_fixing_summaries(self.model, step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
