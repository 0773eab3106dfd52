"""`WeightFixingWrapper`: a Keras layer wrapper whose fixed weights never move."""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import numpy as np

from tfmot_wfn.core.fixing_rules import AUTO_RULE, LEGACY_DEFAULT_RULE, choose_rule
from tfmot_wfn.keras import fixable_layer
from tfmot_wfn.keras import fixing_schedule as schedules
from tfmot_wfn.keras.fixing_config import FixingConfig
from tfmot_wfn.keras.compat import (
    IS_LEGACY_KERAS,
    SubstitutedWeights,
    autocasts,
    build_from_config,
    in_xla_compilation,
    keras,
    own_variables,
    tf,
    variable_dtype,
)

def check_wrappable(layer) -> None:
    """Refuse a layer that is already wrapped, has no weights, or is not supported.

    `fix_weights` calls it on every layer before it wraps any, the wrapper again.
    """
    if isinstance(layer, WeightFixingWrapper):
        raise ValueError(
            f"Layer {layer.name!r} is already a WeightFixingWrapper; do not wrap it twice.")
    if not fixable_layer.is_supported(layer):
        if layer.built and not layer.weights:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) has no weights, so there is "
                "nothing to fix in it; pass only layers with weights (fix_weights(model) "
                "leaves weightless layers as they are).")
        raise fixable_layer.unsupported_layer_error(layer)


#: The `FixingConfig` fields the wrapper takes as keyword arguments (the schedule
#: also positionally, second, as tfmot's wrappers take theirs).
SETTING_NAMES = tuple(f.name for f in dataclasses.fields(FixingConfig) if f.name != "fixing_schedule")


def _config(fixing_schedule, fixing_config: Optional[FixingConfig], settings) -> FixingConfig:
    """The wrapper's validated `FixingConfig`: ``fixing_config`` (or the defaults) with the
    schedule and the keyword settings given beside it."""
    if fixing_config is None:
        return FixingConfig(fixing_schedule=fixing_schedule, **settings)
    if not isinstance(fixing_config, FixingConfig):
        raise TypeError(
            f"fixing_config must be a tfmot_wfn.FixingConfig, got {type(fixing_config).__name__}")
    # The config is frozen, but fit resolves an epoch-based schedule in place: this wrapper
    # gets its own copy of the config's, so the caller's config stays as it was.
    settings["fixing_schedule"] = (fixing_schedule if fixing_schedule is not None
                                   else fixing_config.fixing_schedule.copy())
    return dataclasses.replace(fixing_config, **settings)  # validated again


def _setting(name: str) -> property:
    return property(lambda self: getattr(self.fixing_config, name),
                    doc=f"``fixing_config.{name}`` (read-only).")


@keras.saving.register_keras_serializable(package="tfmot_wfn")
class WeightFixingWrapper(keras.layers.Wrapper):
    """Wraps a layer so that its weights can be fixed to a network-wide palette.

    For every fixable weight the wrapper holds a boolean mask and the fixed
    values as non-trainable variables. The layer runs with the effective
    weight ``where(mask, fixed_values, weight)``: fixed entries are exactly
    their palette value whatever the optimizer does to the underlying variable
    (momentum, weight decay), free entries train normally. Fixing itself is
    done network-wide by the `UpdateFixingStep` callback.

    Use `tfmot_wfn.fix_weights` rather than this class directly:

    ```python
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    fixed = tfmot_wfn.fix_weights(model)
    isinstance(fixed.layers[0], tfmot_wfn.WeightFixingWrapper)  # True
    ```

    Args:
      layer: the layer to wrap (supported built-in or `FixableLayer`).
      fixing_schedule: a `FixingSchedule`; default `StagedFixing()` (paper's ten stages,
        one epoch each).
      distance: the paper's delta, in (0, 1).
      regularization: gamma of the regulariser (0 disables it).
      temperature: softmin temperature tau of the regulariser, > 0.
      zero_distance: magnitudes below it go to 0 (g0 = 2**-7).
      fix_biases: also fix biases.
      fix_batchnorm: also fix normalization scale/shift (gamma/beta).
      palette_capacity: room for the shared palette inside the wrapper.
      preserve_sparsity: when the wrapper is built, fix the weights that are exactly 0
        to 0 (a pruned model keeps its zeros); they count as fixed, and the stage
        fractions apply to the other weights (see `run_fixing_stage`).
      rule: the fixing rule of the greedy stages (see `tfmot_wfn.fix_weights`).
      int8_exact: keep every kernel output channel exactly int8 codes times one
        power-of-two scale (see `tfmot_wfn.fix_weights`).
      fixing_config: all of the settings above at once, as a `FixingConfig`.

    All but ``layer`` and ``fixing_schedule`` are keyword-only. They are validated
    into ``wrapper.fixing_config``, a frozen `FixingConfig`; ``wrapper.distance`` etc.
    read it. A whole `FixingConfig` can be passed as ``fixing_config=`` (the keyword
    settings and the schedule given beside it replace its fields); the remaining
    keyword arguments go to `keras.layers.Wrapper` (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        layer,
        fixing_schedule: Optional[schedules.FixingSchedule] = None,
        *,
        fixing_config: Optional[FixingConfig] = None,
        **kwargs,
    ):
        settings = {name: kwargs.pop(name) for name in SETTING_NAMES if name in kwargs}
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"WeightFixingWrapper wraps a keras.layers.Layer, got {type(layer).__name__}")
        if isinstance(layer, keras.Model):
            raise TypeError(
                f"WeightFixingWrapper wraps single layers, got the model {layer.name!r}; "
                "call tfmot_wfn.fix_weights(model) instead.")
        check_wrappable(layer)
        if "name" not in kwargs:
            kwargs["name"] = f"fix_{layer.name}"
        if kwargs.get("dtype") is None:
            # Compute in the wrapped layer's dtype policy, not the global one: under
            # mixed precision a layer kept in float32 (e.g. the output layer) must not
            # receive float16 inputs from its wrapper.
            kwargs["dtype"] = layer.dtype_policy
        config = _config(fixing_schedule, fixing_config, settings)
        chosen_alone = config.rule == AUTO_RULE  # fix_weights(model) chooses for the network
        if chosen_alone:
            config = dataclasses.replace(
                config, rule=choose_rule(AUTO_RULE, fixable_layer.has_depthwise([layer])))
        super().__init__(layer, **kwargs)
        self.fixing_config = config
        #: ``rule="auto"`` was chosen for this layer alone: the network (`FixingNetwork`)
        #: chooses again for all its layers, as ``fix_weights(model)`` does.
        self.rule_chosen_alone = chosen_alone
        self.preserved_zeros = None
        object.__setattr__(self, "_fixable", [])  # the wrapped layer's fixable variables
        self.masks: List = []
        self.fixed_values: List = []

    # ------------------------------------------------------------------ build
    def build(self, input_shape=None):
        if not self.layer.built:
            super().build(input_shape)
        # Not tracked (object.__setattr__): Keras would list the wrapped layer's variables as
        # the wrapper's own too, and every .keras file would store them twice.
        object.__setattr__(self, "_fixable", list(
            fixable_layer.fixable_weights(self.layer, self.fix_biases, self.fix_batchnorm)))
        self.masks, self.fixed_values = [], []
        for i, v in enumerate(self._fixable):
            self.masks.append(self.add_weight(
                name=f"fixed_mask_{i}", shape=tuple(v.shape), dtype="bool",
                initializer="zeros", trainable=False))
            # Read in the compute dtype exactly when the weight itself is (mixed
            # precision autocasts kernels, not BatchNormalization's gamma/beta).
            self.fixed_values.append(self.add_weight(
                name=f"fixed_values_{i}", shape=tuple(v.shape), dtype=variable_dtype(v),
                initializer="zeros", trainable=False,
                autocast=autocasts(v)))
        self.palette = self.add_weight(
            name="palette", shape=(self.palette_capacity,), dtype="float32",
            initializer="zeros", trainable=False)
        self.palette_size = self.add_weight(
            name="palette_size", shape=(), dtype="int32", initializer="zeros", trainable=False)
        # -1 until UpdateFixingStep writes the step: see _require_fixing_step.
        self.fixing_step = self.add_weight(
            name="fixing_step", shape=(), dtype="int64",
            initializer=keras.initializers.Constant(-1), trainable=False)
        if self.preserve_sparsity:
            self._fix_zeros()
        self.built = True

    def _fix_zeros(self):
        """`preserve_sparsity`: the weights that are exactly 0 now are fixed to 0.

        Their count is kept in the ``preserved_zeros`` variable (saved with the model;
        loading overwrites what is computed here with the saved state).
        """
        with tf.init_scope():
            zeros = [np.asarray(v.numpy()) == 0 for v in self._fixable]
            for mask, z in zip(self.masks, zeros):
                mask.assign(z)
            self.preserved_zeros = self.add_weight(
                name="preserved_zeros", shape=(), dtype="int64",
                initializer=keras.initializers.Constant(int(sum(z.sum() for z in zeros))),
                trainable=False)

    # ---------------------------------------------------------------- settings
    # Read-only views of `fixing_config` (a frozen `FixingConfig`).
    fixing_schedule = _setting("fixing_schedule")
    distance = _setting("distance")
    regularization = _setting("regularization")
    temperature = _setting("temperature")
    zero_distance = _setting("zero_distance")
    fix_biases = _setting("fix_biases")
    fix_batchnorm = _setting("fix_batchnorm")
    palette_capacity = _setting("palette_capacity")
    preserve_sparsity = _setting("preserve_sparsity")
    int8_exact = _setting("int8_exact")

    # --------------------------------------------------------------- accessors
    @property
    def fixable_variables(self) -> list:
        """The wrapped layer's variables that take part in fixing."""
        return list(self._fixable)

    def effective_weight(self, i: int):
        """Tensor of fixable weight `i` as the layer sees it."""
        v = self._fixable[i]
        # Inside a layer call under a mixed precision policy, reading a variable
        # autocasts it to the compute dtype, but only if it allows autocasting
        # (BatchNormalization's do not): cast both branches back to the variable
        # dtype so that they agree. The layer autocasts the result again.
        dtype = v.dtype
        return tf.where(tf.convert_to_tensor(self.masks[i]),
                        tf.cast(tf.convert_to_tensor(self.fixed_values[i]), dtype),
                        tf.cast(tf.convert_to_tensor(v), dtype))

    def effective_numpy(self) -> List[np.ndarray]:
        """Effective values of every fixable weight (numpy, eager)."""
        out = []
        for v, m, f in zip(self._fixable, self.masks, self.fixed_values):
            out.append(np.where(np.asarray(m.numpy()), f.numpy(), v.numpy()))
        return out

    def mask_numpy(self) -> List[np.ndarray]:
        return [np.asarray(m.numpy(), dtype=bool) for m in self.masks]

    # ------------------------------------------------------------------- call
    def _require_fixing_step(self) -> list:
        """Refuse to train when `UpdateFixingStep` never advanced the step (tfmot's check).

        ``fixing_step`` starts at -1, below any step the callback writes: it writes
        the step (>= 1) before every training batch, and the variable is saved with
        the model. So a step still at -1 in a training call means that no
        `UpdateFixingStep` ever drove this model: no stage would ever run.

        * Eager and graph (`tf.function`) calls: an Assert op on the variable, which
          the whole call depends on, so a failing step changes nothing. It
          reads the variable when it runs, so a train function traced once stays
          right for every later `fit` (no retrace, nothing to drop between fits).
        * XLA (`jit_compile=True`, which Keras turns on by itself on a GPU) drops
          Assert ops. There the same check runs on the host while the training
          graph is traced: `fit` traces its train function at the first batch,
          after the callback's `on_train_batch_begin` has written the step, so a
          step still at -1 then means no callback. This fires before the first
          step runs and needs no hook in `fit` (a check at the end of the first
          epoch would need a callback, the very thing that is missing, and would
          let an epoch train first). The compiled step itself carries no check.
          A train function whose first trace failed cannot be traced again, so
          this message also says to compile the model again.

        Like tfmot's, the check guards the mistake that leaves the variable at -1:
        once the step has advanced it is saved with the model, and a later `fit`
        without the callback is not detected.

        Both raise `tf.errors.InvalidArgumentError` with the same message. Returns
        the ops the call depends on (none in eager mode or under XLA).
        """
        message = (
            f"{self.name}: a WeightFixingWrapper is being trained without the "
            "tfmot_wfn.UpdateFixingStep() callback. Add it to model.fit(..., "
            "callbacks=[tfmot_wfn.UpdateFixingStep()]); in a custom training loop call "
            "its set_model(model) and on_train_begin() first and "
            "on_train_batch_begin(step) every step.")
        if not tf.executing_eagerly() and in_xla_compilation():
            with tf.init_scope():
                never_advanced = int(self.fixing_step.numpy()) < 0
            if never_advanced:  # a first trace that failed leaves fit's function unusable
                raise tf.errors.InvalidArgumentError(None, None, message + (
                    " Under XLA (jit_compile) this is found while the train step is "
                    "traced: compile the model again before the next fit."))
            return []
        # The bare op: tf.debugging.assert_* wrap it in a tf.cond (a function call
        # per wrapper and step, measurable on a small model).
        check = tf.raw_ops.Assert(
            condition=tf.convert_to_tensor(self.fixing_step) >= 0, data=[message])
        return [] if tf.executing_eagerly() else [check]

    def call(self, inputs, *args, training=None, **kwargs):
        checks = self._require_fixing_step() if training else []
        with tf.control_dependencies(checks):  # nothing of the call runs before the check
            effective = {id(v): self.effective_weight(i) for i, v in enumerate(self._fixable)}
            if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
                # tf_keras has no StatelessScope: the layer's weight attributes hold the
                # effective tensors during the call and the variables again after it.
                replacements = {id(v): (v, effective[id(v)]) for v in self._fixable}
                with SubstitutedWeights(self.layer, replacements):
                    return self.layer(inputs, *args, training=training, **kwargs)
            return self._call_stateless(effective, inputs, *args, training=training, **kwargs)

    def _call_stateless(self, effective, inputs, *args, **kwargs):
        """Keras 3: the layer's call with its variables read as `effective` ({id: tensor})."""
        inner = list(self.layer.variables)
        mapping = [(v, effective.get(id(v), v.value)) for v in inner]
        original = {id(v): value for v, value in mapping}
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = self.layer(inputs, *args, **kwargs)
        # State updates made inside the scope (BatchNorm statistics, RNG seeds)
        # are recorded by it, not applied: apply them now.
        for v in inner:
            if id(v) in effective:
                continue
            new = scope.get_current_value(v)
            if new is not None and new is not original[id(v)]:
                v.assign(new)
        for loss in scope.losses:
            self.add_loss(loss)
        return outputs

    # ----------------------------------------------------------------- config
    def get_build_config(self):
        config = super().get_build_config() or {}
        if self.layer.built:
            inner = self.layer.get_build_config()
            if inner is not None:
                config["layer_build_config"] = inner
        return config

    def load_own_variables(self, store):
        """Keras's loading, also of files written by tfmot_wfn 0.2.0 and earlier, whose
        wrappers stored the wrapped layer's fixable variables a second time, first (they are
        skipped: the wrapped layer loads its own)."""
        own = own_variables(self)
        extra = len(store.keys()) - len(own)
        if extra != len(self._fixable) or extra == 0:
            return super().load_own_variables(store)
        for i, v in enumerate(own):
            v.assign(store[f"{i + extra}"])

    def build_from_config(self, config):
        inner = (config or {}).get("layer_build_config")
        if inner is not None and not self.layer.built:
            # Multi-input layers (MultiHeadAttention) need their own build config.
            build_from_config(self.layer, inner)
        self.build((config or {}).get("input_shape"))

    def get_config(self):
        config = super().get_config()
        config.update({
            "fixing_schedule": schedules.serialize(self.fixing_schedule),
            "distance": self.distance,
            "regularization": self.regularization,
            "temperature": self.temperature,
            "zero_distance": self.zero_distance,
            "fix_biases": self.fix_biases,
            "fix_batchnorm": self.fix_batchnorm,
            "palette_capacity": self.palette_capacity,
            # Always written: a config without it is from before the default changed.
            "rule": self.fixing_config.rule,
        })
        if self.preserve_sparsity:  # absent otherwise: configs of earlier versions load
            config["preserve_sparsity"] = True
        if self.int8_exact:  # likewise
            config["int8_exact"] = True
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if not isinstance(config.get("layer"), dict):
            raise ValueError(
                f"WeightFixingWrapper {config.get('name')!r}: the saved config has no 'layer' "
                "entry; the model file is damaged or was edited (save the model again)")
        layer = keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        config.setdefault("rule", LEGACY_DEFAULT_RULE)  # saved by tfmot_wfn 0.1
        schedule = config.pop("fixing_schedule", None)
        if isinstance(schedule, dict):
            schedule = schedules.deserialize(schedule, custom_objects)
        return cls(layer, fixing_schedule=schedule, **config)
