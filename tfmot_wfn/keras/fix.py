"""Entry points: `fix_weights`, `strip_fixing`, `fixing_scope` (like tfmot's prune.py)."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from tfmot_wfn.core.fixing_rules import AUTO_RULE, DEFAULT_RULE, choose_rule
from tfmot_wfn.core.powers_of_two import ZERO_DISTANCE
from tfmot_wfn.keras import fixable_layer, regularizer
from tfmot_wfn.keras import fixing_schedule as schedules
from tfmot_wfn.keras.cloning import (
    clone_model,
    copy_layer,
    is_functional_or_sequential,
    rebuilt_layer,
    walk_layers,
    walk_models,
)
from tfmot_wfn.keras.compat import (
    autocasts,
    keras,
    producing_layer,
    tf,
    variable_path,
)
from tfmot_wfn.keras.fixing_config import (
    DEFAULT_DISTANCE,
    DEFAULT_PALETTE_CAPACITY,
    DEFAULT_REGULARIZATION,
    DEFAULT_TEMPERATURE,
    FixingConfig,
)
from tfmot_wfn.keras.fixing_wrapper import WeightFixingWrapper, check_wrappable
from tfmot_wfn.keras.network import wrappers_of
from tfmot_wfn.utils.finite import count_nonfinite


def fixing_scope():
    """Custom-object scope to load models saved while fixing.

    The classes are also registered with Keras, so ``keras.models.load_model``
    works without it; the scope exists for parity with tfmot's `prune_scope`.

    ```python
    with tfmot_wfn.fixing_scope():
        model = keras.models.load_model("fixed.keras")
    ```
    """
    return keras.utils.custom_object_scope({
        "WeightFixingWrapper": WeightFixingWrapper,
        "StagedFixing": schedules.StagedFixing,
        "PolynomialFixing": schedules.PolynomialFixing,
    })


SUBCLASSED_MODEL_HELP = (
    "Wrap the supported layers inside your subclass instead, all with the same schedule "
    "and distance: in __init__, schedule = tfmot_wfn.StagedFixing(...); self.dense = "
    "tfmot_wfn.fix_weights(keras.layers.Dense(10), fixing_schedule=schedule); call the model "
    "on a batch once (model(x[:1])) to build it, then train with "
    "callbacks=[tfmot_wfn.UpdateFixingStep()] as usual, and get plain layers with "
    "tfmot_wfn.strip_fixing(self.dense) (or copy their effective weights into a plain "
    "instance of your model).")


def _check_model(model, fix_biases: bool = True, fix_batchnorm: bool = True) -> None:
    owner = {}  # id(layer) -> the first model holding it
    for inner in walk_models(model):  # nested models too: Keras cannot clone a subclassed one
        if not is_functional_or_sequential(inner):
            where = "" if inner is model else f" (nested in model {model.name!r})"
            raise ValueError(
                f"Model {inner.name!r}{where} is a subclassed keras.Model; fix_weights supports "
                "Sequential and Functional models (as tfmot does). " + SUBCLASSED_MODEL_HELP)
        for layer in inner.layers:
            first = owner.setdefault(id(layer), inner)
            if first is not inner and getattr(layer, "weights", None) and not isinstance(layer, keras.Model):
                raise ValueError(
                    f"Layer {layer.name!r} is used in two models of the network, {first.name!r} "
                    f"and {inner.name!r}: cloning copies each model alone, so the "
                    "fixed model would hold two untied copies of its weights (Keras's "
                    "clone_model does the same). Call the layer in one of the two models only "
                    "(e.g. build the nested part as plain layers of the outer model).")
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built, so its weights do not exist yet. Build it "
            "first: start a Sequential model with keras.Input(shape), or call "
            "model.build(input_shape) or the model on a batch of data.")
    problems, layers = [], []
    for layer in walk_layers(model):
        if isinstance(layer, WeightFixingWrapper):
            raise ValueError(
                f"Model {model.name!r} already contains the WeightFixingWrapper {layer.name!r}: "
                "it was made by fix_weights. Call tfmot_wfn.strip_fixing(model) first to get "
                "a plain model, or keep training the wrapped one.")
        if layer.weights:
            if fixable_layer.kept_float_reason(layer) is not None:
                continue  # e.g. Normalization: left float and unwrapped (report() says why)
            if not fixable_layer.is_supported(layer):
                problems.append(fixable_layer.unsupported_layer_error(layer))
            else:
                layers.append(layer)
    if problems:
        raise problems[0]
    if not layers:
        raise ValueError(f"Model {model.name!r} has no layer with weights to fix.")
    count = sum(int(np.prod(v.shape)) for layer in layers
                for v in fixable_layer.fixable_weights(layer, fix_biases, fix_batchnorm))
    if count == 0:
        raise ValueError(
            f"Model {model.name!r} has no fixable weight with fix_biases={fix_biases} and "
            f"fix_batchnorm={fix_batchnorm}: its layers with weights hold only "
            + ("biases and " if not fix_biases else "")
            + ("normalization scale/shift and " if not fix_batchnorm else "")
            + "statistics. Fix more kinds of weights or pass a model with kernels.")
    for layer in layers:
        _check_layer_values(layer, fix_biases, fix_batchnorm)


def _check_layer_values(layer, fix_biases: bool, fix_batchnorm: bool) -> None:
    """Refuse NaN/Inf weights, and weights a mixed precision compute dtype cannot hold."""
    if not layer.weights:
        return
    compute = tf.dtypes.as_dtype(layer.compute_dtype)
    for v in fixable_layer.fixable_weights(layer, fix_biases, fix_batchnorm):
        values = np.asarray(v.numpy())
        bad = count_nonfinite(values)
        if bad:
            raise ValueError(
                f"{bad} of {values.size} values of weight {variable_path(v)!r} in layer {layer.name!r} "
                "are NaN or Inf; fix_weights needs a model with finite weights. The float "
                "model diverged or was loaded wrongly: retrain it (lower learning rate, "
                "gradient clipping) or load a good checkpoint.")
        stored = tf.dtypes.as_dtype(v.dtype)
        if autocasts(v) and compute.is_floating and compute.size < stored.size:
            limit = float(compute.max)
            largest = float(np.max(np.abs(values))) if values.size else 0.0
            if largest > limit:
                raise ValueError(
                    f"Weight {variable_path(v)!r} of layer {layer.name!r} holds {largest:g}, beyond the "
                    f"largest {compute.name} value {limit:g}; the layer computes in {compute.name} "
                    "under the mixed precision policy, so fixed values could not be represented "
                    "(and its outputs already overflow). Keep this layer in float32 "
                    "(dtype='float32') or rescale the weights.")


def _output_layer_ids(model) -> set:
    """``id`` of each layer whose call makes an output of ``model`` (Keras names a model's
    outputs after those layers, unless the outputs are a dict)."""
    if isinstance(model, keras.Sequential):
        return {id(model.layers[-1])} if model.layers else set()
    return {id(producing_layer(t)) for t in tf.nest.flatten(model.outputs)}


def _check_single_layer(layer, fix_biases: bool, fix_batchnorm: bool,
                        preserve_sparsity: bool = False) -> None:
    check_wrappable(layer)
    if preserve_sparsity and not layer.built:
        raise ValueError(
            f"preserve_sparsity=True keeps the zeros of the weights you pass, but layer "
            f"{layer.name!r} is not built, so it has no weights yet (a fresh layer's zero "
            "biases would be locked at 0). Pass the built, trained (e.g. pruned and "
            "stripped) layer or model.")
    _check_layer_values(layer, fix_biases, fix_batchnorm)


def fix_weights(
    to_fix,
    fixing_schedule: Optional[schedules.FixingSchedule] = None,
    distance: float = DEFAULT_DISTANCE,
    regularization: float = DEFAULT_REGULARIZATION,
    temperature: float = DEFAULT_TEMPERATURE,
    zero_distance: float = ZERO_DISTANCE,
    fix_biases: bool = True,
    fix_batchnorm: bool = True,
    preserve_sparsity: bool = False,
    rule: str = DEFAULT_RULE,
    int8_exact: bool = False,
    **kwargs,
):
    """Prepare a layer, list of layers or model for Weight Fixing Networks training.

    Like tfmot's `prune_low_magnitude`: returns a NEW model (or layer / list)
    whose supported layers are wrapped in `WeightFixingWrapper`. The model you
    pass is never changed. Train it with `model.fit(...,
    callbacks=[tfmot_wfn.UpdateFixingStep()])`, then `strip_fixing`.

    ```python
    fixed = tfmot_wfn.fix_weights(model, distance=0.015)
    fixed.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fixed.fit(x, y, epochs=10, callbacks=[tfmot_wfn.UpdateFixingStep()])
    final = tfmot_wfn.strip_fixing(fixed)
    ```

    Args:
      to_fix: a layer, a list of layers, or a Sequential / Functional model
        (nested models included).
      fixing_schedule: `StagedFixing` (default: the paper's ten stages, one epoch
        each) or `PolynomialFixing`.
      distance: the paper's delta, the allowed mean relative distance of a weight to
        its centre at the last stage; stages before allow up to 10x more. Smaller
        keeps more unique values and more accuracy. The default 0.015 is the
        coarsest of the paper's settings; with the regulariser it is lossless on
        the digits demo (accuracy within 0.5 points) with a few dozen values.
      regularization: gamma, the weight of the regulariser relative to the task loss
        (0.4 in the paper; 0 turns it off).
      temperature: softmin temperature of the regulariser (0.05).
      zero_distance: weights smaller than this in magnitude are set to 0 (2**-7).
      fix_biases: fix biases too (default, as the reference does).
      fix_batchnorm: fix BatchNormalization/LayerNormalization gamma and beta too.
      preserve_sparsity: keep the zeros of the model at 0 (e.g. after tfmot's
        `prune_low_magnitude` and `strip_pruning`): every fixable weight that is
        exactly 0 is fixed to 0 right away and counts as fixed, and the schedule's
        fractions apply to the remaining weights (a stage at fraction f fixes
        ``s + (1 - s) * f`` of all weights, s the share of zeros). Needs built layers.
      rule: which free weights a greedy step may fix to the centre it chose
        (`tfmot_wfn.core.fixing_rules`). ``"auto"`` (default): ``"gentle"`` if the
        network has depthwise or separable convolutions, else ``"bounded_third"``; the
        wrappers hold the rule chosen. ``"bounded_third"``: any free weight within
        ``max(a, min(3a, 1/3))`` of it (a the stage's distance) until the schedule has
        fixed 90% of the weights, then ``"third"``: close to the paper rule's values and
        entropy without dragging far weights. ``"late_third"``: only the centre's own
        voters (``"nearest_capped"``) until 90%, then ``"third"``: the bulk stays on its
        nearest candidate. ``"gentle"``: ``"late_third"``, and no stage allows more
        than 4x ``distance`` (the schedule's first stages allow up to 10x): fewer large
        moves at once, which a MobileNet's accuracy needs, at the price of more values and
        entropy (finer early centres).
        ``"third"`` (any free weight within ``max(a, 1/3)``: no weight moves more than
        rounding it to a power of two could), ``"nearest_capped"``
        (only weights whose nearest candidate is that centre, none farther than 3a: the
        default of tfmot_wfn 0.1), ``"nearest"``, ``"capped"``, ``"bounded"``, or
        ``"paper"`` (any free weight, as the paper's text reads: fewest unique values; a
        centre with many close weights, such as BatchNorm gammas at 1.0, can drag far
        weights onto it). Recorded in `report` and the TensorBoard summaries.
      int8_exact: keep every output channel of every kernel (Dense, Conv, depthwise,
        separable) exactly int8 codes times ONE power-of-two scale, so that
        ``lite.export_tflite(..., mode="int8")`` stores every kernel exactly (and
        ``mode="int8_weight_only"`` every kernel as int8). Each stage
        snaps the values it fixes in a channel onto multiples of the channel's step
        ``2^e`` (codes within 127), preferring palette values (see
        `tfmot_wfn.core.int8_channels`); biases and BatchNorm parameters stay
        unconstrained. Costs some unique values; recorded in `report`.
      **kwargs: `palette_capacity` (int, default 4096).

    Returns:
      A new model, wrapper or list of wrappers. A wrapper is named ``fix_<layer name>``,
      but one around a layer that makes an output of the model keeps the layer's name:
      Keras names a model's outputs after those layers (``loss={"head": ...}``).

    Raises:
      ValueError / TypeError: bad arguments, a subclassed or unbuilt model, an
        unsupported layer with weights, a model with nothing to fix, NaN or Inf
        weights, weights beyond a mixed precision compute dtype, or an
        already-wrapped model (see docs/errors.md). Nothing is created or changed
        when an error is raised.
    """
    unknown = set(kwargs) - {"palette_capacity"}
    if unknown:
        raise TypeError(f"fix_weights got unexpected keyword arguments {sorted(unknown)}")
    # Validate every argument once, before anything is built (creates no layer).
    config = FixingConfig(
        fixing_schedule=fixing_schedule, distance=distance, regularization=regularization,
        temperature=temperature, zero_distance=zero_distance, fix_biases=fix_biases,
        fix_batchnorm=fix_batchnorm, preserve_sparsity=preserve_sparsity, rule=rule,
        int8_exact=int8_exact,
        palette_capacity=kwargs.get("palette_capacity", DEFAULT_PALETTE_CAPACITY))
    # One copy of the schedule for the wrappers of this call: fit resolves an epoch-based
    # schedule in place (its steps_per_stage), which must not reach the caller's object (a
    # second fix_weights with it would run every stage at the first run's step counts).
    config = dataclasses.replace(config, fixing_schedule=config.fixing_schedule.copy())
    if config.rule == AUTO_RULE and isinstance(to_fix, (keras.Model, list, tuple)):
        # One rule for the whole network. A single layer keeps "auto": its wrapper chooses
        # for it alone, and the network again for all its layers (layers wrapped one by one).
        layers = walk_layers(to_fix) if isinstance(to_fix, keras.Model) else to_fix
        config = dataclasses.replace(
            config, rule=choose_rule(AUTO_RULE, fixable_layer.has_depthwise(layers)))
    params = config.to_kwargs()
    fix_biases, fix_batchnorm = config.fix_biases, config.fix_batchnorm

    if isinstance(to_fix, (list, tuple)):
        for layer in to_fix:
            if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
                raise TypeError(
                    f"fix_weights got a list containing {type(layer).__name__}; a list must "
                    "hold keras layers only.")
        # Check every layer before wrapping any, so that an error creates nothing.
        for layer in to_fix:
            _check_single_layer(layer, fix_biases, fix_batchnorm, config.preserve_sparsity)
        return [fix_weights(layer, **params) for layer in to_fix]
    if isinstance(to_fix, keras.Model):
        _check_model(to_fix, fix_biases, fix_batchnorm)
        outputs = _output_layer_ids(to_fix)

        def clone_function(layer):
            new = copy_layer(layer)
            if new is not layer and layer.weights and fixable_layer.is_supported(layer):
                # A layer that makes an output of the model keeps its name on the wrapper:
                # Keras names the outputs after it (loss={"head": ...}, y dicts, metrics).
                name = {"name": layer.name} if id(layer) in outputs else {}
                return WeightFixingWrapper(new, **params, **name)
            return new

        model = clone_model(to_fix, clone_function)
        regularizer.install(model)
        return model
    if isinstance(to_fix, keras.layers.Layer):
        _check_single_layer(to_fix, fix_biases, fix_batchnorm, config.preserve_sparsity)
        return WeightFixingWrapper(copy_layer(to_fix), **params)
    raise TypeError(
        "fix_weights expects a keras layer, a list of layers, or a Sequential/Functional "
        f"model, got {type(to_fix).__name__}.")


def _stripped_layer(wrapper: WeightFixingWrapper):
    inner = wrapper.layer
    new = rebuilt_layer(inner)
    effective = {id(v): value for v, value in zip(wrapper.fixable_variables, wrapper.effective_numpy())}
    new.set_weights([effective.get(id(v), v.numpy()) for v in inner.weights])
    return new


def strip_fixing(model):
    """A plain Keras model of the original architecture holding the effective weights.

    Fixed weights hold exactly their palette values (after the final stage every
    fixable weight is fixed). The input is not changed. Accepts a model, a
    wrapper (returns the plain layer) or a list of them.

    ```python
    final = tfmot_wfn.strip_fixing(fixed_model)
    final.save("final.keras")
    ```
    """
    if isinstance(model, (list, tuple)):
        return [strip_fixing(m) for m in model]
    if isinstance(model, WeightFixingWrapper):
        return _stripped_layer(model)
    if not isinstance(model, keras.Model):
        raise TypeError(f"strip_fixing expects a keras Model or layer, got {type(model).__name__}")
    if not wrappers_of(model):
        raise ValueError(
            f"Model {model.name!r} has no WeightFixingWrapper: it is not a model made by "
            "fix_weights (or it was stripped already).")
    if not is_functional_or_sequential(model):
        raise ValueError(
            f"Model {model.name!r} is a subclassed keras.Model, which Keras cannot clone. "
            "Strip its wrapped layers one by one: plain = tfmot_wfn.strip_fixing(model.dense) "
            "returns the plain layer with the palette weights (or copy "
            "tfmot_wfn.strip_fixing(wrapper).get_weights() into a plain instance of your model).")

    def clone_function(layer):
        if isinstance(layer, WeightFixingWrapper):
            return _stripped_layer(layer)
        return copy_layer(layer)

    return clone_model(model, clone_function)
