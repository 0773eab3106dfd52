"""Fold BatchNormalization into the Conv/Dense layer before it, before fixing.

The TFLite converter folds an inference-mode BatchNorm into the preceding
layer: each output channel of the kernel is multiplied by
``gamma / sqrt(var + eps)``, which turns palette values into arbitrary floats.
Folding first, then fixing, makes the deployed kernels palette values:

```python
folded = fold_batchnorm(trained_float_model)          # plain Keras model, no folded BN left
fixed = tfmot_wfn.fix_weights(folded)                  # fix, fine-tune, strip as usual
```

A BatchNormalization is folded when it directly follows a Dense, Conv1D/2D/3D,
DepthwiseConv1D/2D, SeparableConv1D/2D or Conv1D/2D/3DTranspose layer that has a linear activation,
is called once, and whose output feeds only that BatchNorm, with the BatchNorm
normalizing the layer's channel axis. Other BatchNorms stay as they are.
The folded model computes the same inference outputs (to float32 rounding);
training it no longer normalizes batches, so fine-tune with a lower learning
rate than the float training used.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Tuple

import numpy as np

from tfmot_wfn.core import batchnorm_affine
from tfmot_wfn.keras.cloning import (
    copy_layer,
    is_functional_or_sequential,
    is_model,
    rebuilt_layer,
    walk_models,
)
from tfmot_wfn.keras.compat import (
    IS_LEGACY_KERAS,
    inbound_nodes,
    input_layer_spec,
    keras,
    node_input_tensors,
    numpy_dtype,
    outbound_nodes,
    producing_layer,
    sequential_input_layer,
    short_name,
)

L = keras.layers
# Layers whose output channels are the last axis of their (last) kernel.
_LAST_AXIS_KERNEL = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D, L.SeparableConv1D, L.SeparableConv2D)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
# Transposed convolutions: kernel (..., out, in), output channels second to last.
_TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
FOLDABLE_LAYERS = _LAST_AXIS_KERNEL + _DEPTHWISE + _TRANSPOSED


@dataclasses.dataclass(frozen=True)
class FoldedPair:
    """A layer and the BatchNormalization folded into it (layer names)."""

    layer: str
    batchnorm: str


def _channel_axis(layer, rank: int) -> int:
    if isinstance(layer, L.Dense):
        return rank - 1
    data_format = getattr(layer, "data_format", "channels_last")
    return 1 if data_format == "channels_first" else rank - 1


def _layer_can_fold(layer) -> bool:
    if not isinstance(layer, FOLDABLE_LAYERS):
        return False
    config = layer.get_config()
    if config.get("activation", "linear") != "linear" or config.get("lora_rank"):
        return False
    names = {short_name(v) for v in layer.weights}
    return names <= {"kernel", "bias", "depthwise_kernel", "pointwise_kernel"}


def _batchnorm_axis(bn):
    """The one axis of a BatchNormalization, or None (tf_keras keeps ``axis`` as a list)."""
    axis = bn.axis
    if isinstance(axis, (list, tuple)) and len(axis) == 1:
        axis = axis[0]
    return axis if isinstance(axis, int) else None


def _batchnorm_matches(layer, bn, output_shape) -> bool:
    if not isinstance(bn, L.BatchNormalization) or _batchnorm_axis(bn) is None:
        return False
    rank = len(output_shape)
    return _batchnorm_axis(bn) % rank == _channel_axis(layer, rank)


def _functional_pairs(model) -> Dict[int, object]:
    """id(BatchNorm) -> the layer it folds into, for a Functional model."""
    outputs = {id(t) for t in model.outputs}
    pairs = {}
    for bn in model.layers:
        if not isinstance(bn, L.BatchNormalization) or len(inbound_nodes(bn)) != 1:
            continue
        inputs = node_input_tensors(inbound_nodes(bn)[0])
        if len(inputs) != 1:
            continue
        tensor = inputs[0]
        layer = producing_layer(tensor)
        if (not _layer_can_fold(layer) or len(inbound_nodes(layer)) != 1
                or len(outbound_nodes(layer)) != 1 or id(tensor) in outputs
                or layer not in model.layers):
            continue
        if _batchnorm_matches(layer, bn, tensor.shape):
            pairs[id(bn)] = layer
    return pairs


def _sequential_pairs(model) -> Dict[int, object]:
    pairs = {}
    layers = model.layers
    for layer, bn in zip(layers[:-1], layers[1:]):
        if not _layer_can_fold(layer) or not isinstance(bn, L.BatchNormalization):
            continue
        if _batchnorm_matches(layer, bn, layer.output.shape):
            pairs[id(bn)] = layer
    return pairs


def _pairs(model) -> Dict[int, object]:
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built; call it on data or give it an Input")
    if isinstance(model, keras.Sequential):
        return _sequential_pairs(model)
    return _functional_pairs(model)


def _nested_pairs(model, descend: Callable) -> List[Tuple[object, object]]:
    """``(layer, BatchNorm)`` of each fold in `model`, then in each nested model (each layer
    for which ``descend(layer)``) in layer order."""
    found = []
    for m in walk_models(model, descend):
        bn_by_id = {id(layer): layer for layer in m.layers}
        found.extend((layer, bn_by_id[bn_id]) for bn_id, layer in _pairs(m).items())
    return found


def foldable_batchnorms(model) -> List[FoldedPair]:
    """The (layer, BatchNorm) pairs `fold_batchnorm` would fold, nested models included.

    ```python
    >>> foldable_batchnorms(build_cnn(keras))
    [FoldedPair(layer='conv1', batchnorm='bn1'), FoldedPair(layer='conv2', batchnorm='bn2')]
    ```
    """
    return [FoldedPair(layer.name, bn.name) for layer, bn in _nested_pairs(model, is_model)]


def foldable_layer_pairs(model) -> List[Tuple[object, object]]:
    """``(layer, BatchNorm)`` objects of every fold, nested models included.

    The pairs `fold_batchnorm` folds. The TFLite converter folds the same ones, except
    after a Conv3DTranspose (and tf_keras's Conv1DTranspose), where the BatchNorm stays
    its own ops; the export matches the folded float weights it finds back to these
    pairs. Outer model first, then each nested Functional or Sequential model in layer
    order.
    """
    return _nested_pairs(model, is_functional_or_sequential)


def batchnorm_values(bn, dtype=np.float64) -> Dict[str, np.ndarray]:
    """``gamma``, ``beta``, ``moving_mean``, ``moving_variance`` of ``bn`` as ``dtype`` arrays.

    A BatchNorm without ``scale``/``center`` gets gamma 1 / beta 0.
    """
    values = {short_name(v): np.asarray(v.numpy(), dtype) for v in bn.weights}
    var = values["moving_variance"]
    values.setdefault("gamma", np.ones_like(var))
    values.setdefault("beta", np.zeros_like(var))
    return values


def batchnorm_scale_shift(bn):
    """``(scale, shift)`` of an inference-mode BatchNorm: ``y = x * scale + shift`` (float64)."""
    v = batchnorm_values(bn)
    return batchnorm_affine.batchnorm_scale_shift(
        v["gamma"], v["beta"], v["moving_mean"], v["moving_variance"], bn.epsilon)


def is_depthwise(layer) -> bool:
    """A DepthwiseConv1D/2D: its kernel's output channel is ``in * multiplier + m``."""
    return isinstance(layer, _DEPTHWISE)


def is_transposed(layer) -> bool:
    """A Conv1D/2D/3DTranspose: its kernel is ``(..., out, in)`` (tf_keras's subclass Conv)."""
    return isinstance(layer, _TRANSPOSED)


def kernel_key(layer, names) -> str:
    """The name of the weight a BatchNorm after `layer` scales, among `names`.

    The pointwise kernel of a separable convolution; the kernel of a depthwise
    one (``depthwise_kernel`` in tf_keras, ``kernel`` in Keras 3); else ``kernel``.
    """
    if "pointwise_kernel" in names:
        return "pointwise_kernel"
    if isinstance(layer, _DEPTHWISE) and "kernel" not in names and "depthwise_kernel" in names:
        return "depthwise_kernel"
    return "kernel"


def folded_weights(layer, bn) -> Dict[str, np.ndarray]:
    """The ``layer`` weights (by variable name) with ``bn`` folded in; bias always present."""
    values = {short_name(v): np.asarray(v.numpy(), np.float64) for v in layer.weights}
    scale, shift = batchnorm_scale_shift(bn)
    key = kernel_key(layer, values)
    if isinstance(layer, _DEPTHWISE):
        kernel = values[key]
        values[key] = kernel * scale.reshape(kernel.shape[-2:])
    elif is_transposed(layer):
        values[key] = values[key] * scale[:, np.newaxis]
    else:
        values[key] = values[key] * scale
    values["bias"] = values.get("bias", np.zeros_like(scale)) * scale + shift
    return values


def _folded_layer(layer, bn):
    config = layer.get_config()
    config["use_bias"] = True
    new = rebuilt_layer(layer, config)
    values = folded_weights(layer, bn)
    new.set_weights([values[short_name(v)].astype(numpy_dtype(v)) for v in new.weights])
    return new


def fold_batchnorm(model):
    """A new plain Keras model with each foldable BatchNormalization folded into its layer.

    ``model`` is not changed. The kernel of the layer before the BatchNorm is
    scaled per output channel by ``gamma / sqrt(moving_variance + epsilon)``, its
    bias becomes ``(bias - moving_mean) * scale + beta`` (a bias is added if it had
    none), and the BatchNorm disappears. Inference outputs are unchanged (to
    float32 rounding, ~1e-6 relative). Use it on the trained float model BEFORE
    `tfmot_wfn.fix_weights`, so the exported kernels are palette values.

    ```python
    folded = fold_batchnorm(model)
    np.testing.assert_allclose(folded.predict(x), model.predict(x), atol=1e-5)
    ```

    Raises:
      TypeError: not a Sequential/Functional Keras model.
      ValueError: the model is unbuilt or made by fix_weights (fold before fixing).
    """
    from tfmot_wfn.keras.network import is_wrapped

    if not isinstance(model, keras.Model) or not hasattr(model, "layers"):
        raise TypeError(f"fold_batchnorm expects a Keras model, got {type(model).__name__}")
    if is_wrapped(model):
        raise ValueError(
            f"model {model.name!r} was made by tfmot_wfn.fix_weights: fold BatchNorm into the "
            "float model before fixing (fold_batchnorm(float_model), then fix_weights), since "
            "folding rescales the fixed palette values.")
    pairs = _pairs(model)
    folded_into = {id(layer): bn_id for bn_id, layer in pairs.items()}
    bn_by_id = {id(layer): layer for layer in model.layers}
    skip = set(pairs)

    def clone(layer):
        if is_model(layer):
            return fold_batchnorm(layer)
        if id(layer) in folded_into:
            return _folded_layer(layer, bn_by_id[folded_into[id(layer)]])
        return copy_layer(layer)

    if isinstance(model, keras.Sequential):
        first = sequential_input_layer(model)
        layers = [clone(layer) for layer in model.layers if id(layer) not in skip]
        if first is not None:
            batch_shape, dtype = input_layer_spec(first)
            layers.insert(0, keras.Input(batch_shape=batch_shape, dtype=dtype, name=first.name))
        folded = keras.Sequential(layers, name=model.name)  # tf_keras: no trainable argument
        folded.trainable = model.trainable
        return folded

    skipped_clones = set()

    def clone_function(layer):
        if id(layer) in skip:
            placeholder = L.Identity(name=layer.name)  # never called: the BN is bypassed
            skipped_clones.add(id(placeholder))
            return placeholder
        return clone(layer)

    if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
        # tf_keras's clone_model has no call_function: the Identity placeholder is
        # called in the BatchNorm's place (it has no weights; the converter drops it).
        return keras.models.clone_model(model, clone_function=clone_function)

    def call_function(layer, *args, **kwargs):
        if id(layer) in skipped_clones:
            return args[0]
        return layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=clone_function,
                                    call_function=call_function)


__all__ = ["FOLDABLE_LAYERS", "FoldedPair", "batchnorm_scale_shift", "batchnorm_values",
           "fold_batchnorm", "foldable_batchnorms", "foldable_layer_pairs", "folded_weights",
           "is_depthwise", "is_transposed", "kernel_key"]
