"""Which weights of a layer are fixed: the `FixableLayer` interface and the built-in registry."""

from __future__ import annotations

import abc
from typing import List, Optional, Tuple

from tfmot_wfn.keras.compat import keras

#: Weight names that are always fixed (kernels and embeddings).
KERNEL_NAMES = frozenset({"kernel", "depthwise_kernel", "pointwise_kernel", "embeddings"})
#: Weight names fixed when ``fix_biases`` is on.
BIAS_NAMES = frozenset({"bias"})
#: Normalization scale/shift, fixed when ``fix_batchnorm`` is on.
NORMALIZATION_NAMES = frozenset({"gamma", "beta"})
#: Buffers that are never fixed (running statistics).
BUFFER_NAMES = frozenset({"moving_mean", "moving_variance"})


class FixableLayer(metaclass=abc.ABCMeta):
    """Interface a custom layer implements to opt in to weight fixing.

    Example:

    ```python
    class ScaledDense(keras.layers.Layer, tfmot_wfn.FixableLayer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 4))
            self.scale = self.add_weight(shape=(), initializer="ones")

        def call(self, x):
            return self.scale * (x @ self.w)

        def get_fixable_weights(self):
            return [self.w]          # `scale` stays float
    ```
    """

    @abc.abstractmethod
    def get_fixable_weights(self) -> List["keras.Variable"]:
        """The variables of this layer whose values join the shared palette."""


def layer_classes(*names: str) -> tuple:
    """The ``keras.layers`` classes of these names that this Keras has."""
    return tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))


SUPPORTED_LAYERS = layer_classes(
    "Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D",
    "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
    "BatchNormalization", "LayerNormalization", "Embedding", "MultiHeadAttention",
)

#: Layers with weights that `fix_weights(model)` leaves float and unwrapped, with the reason:
#: their weights are preprocessing statistics (set by ``adapt()`` or given), not trained.
KEPT_FLOAT_LAYERS = {
    "Normalization": "preprocessing statistics (mean, variance, count) set by adapt() or "
                     "given, not trained; the layer is left float and unwrapped",
}

#: Why a weight of a wrapped layer is not fixed, by weight name.
BUFFER_REASON = ("running statistics, not trained; stay float (the exporter folds them "
                 "into the BatchNorm scale and shift)")


def _short_name(variable) -> str:
    name = getattr(variable, "path", None) or variable.name
    return name.split("/")[-1].split(":")[0]


#: Layers that make a network depthwise-separable (MobileNet-style): ``rule="auto"`` picks
#: `tfmot_wfn.core.fixing_rules.DEPTHWISE_RULE` for a network with any of them.
DEPTHWISE_LAYERS = layer_classes("DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
                                 "SeparableConv2D")


def has_depthwise(layers) -> bool:
    """True if any of `layers` (layers; wrappers count by the layer they wrap) is a
    depthwise or separable convolution."""
    return any(isinstance(getattr(layer, "layer", layer), DEPTHWISE_LAYERS) for layer in layers)


def is_supported(layer) -> bool:
    """True if `layer` implements `FixableLayer` or is a built-in supported class."""
    return isinstance(layer, FixableLayer) or isinstance(layer, SUPPORTED_LAYERS)


def kept_float_reason(layer) -> Optional[str]:
    """Why `fix_weights(model)` leaves this layer with weights float (None: it does not).

    Only for layers whose weights are not trained (`KEPT_FLOAT_LAYERS`, e.g.
    `Normalization` in EfficientNet); any other unsupported layer with weights
    is refused by `fix_weights`.
    """
    if isinstance(layer, FixableLayer) or isinstance(layer, SUPPORTED_LAYERS) or not layer.weights:
        return None
    for cls in type(layer).__mro__:
        if cls.__name__ in KEPT_FLOAT_LAYERS and getattr(keras.layers, cls.__name__, None) is cls:
            if not any(v.trainable for v in layer.weights):
                return f"{cls.__name__}: {KEPT_FLOAT_LAYERS[cls.__name__]}"
    return None


def unfixed_weights(layer, fix_biases: bool = True, fix_batchnorm: bool = True
                    ) -> List[Tuple[object, str]]:
    """``(variable, reason)`` for every weight of `layer` that fixing leaves float.

    For a supported layer: its running statistics, and biases / normalization
    scale and shift when `fix_biases` / `fix_batchnorm` are off. For a layer kept
    float (`kept_float_reason`): all its weights. Raises like `fixable_weights`
    for an unsupported layer.
    """
    reason = kept_float_reason(layer)
    if reason is not None:
        return [(v, reason) for v in layer.weights]
    chosen = {id(v) for v in fixable_weights(layer, fix_biases, fix_batchnorm)}
    out = []
    for v in layer.weights:
        if id(v) in chosen:
            continue
        name = _short_name(v)
        if name in BUFFER_NAMES:
            out.append((v, BUFFER_REASON))
        elif name in BIAS_NAMES:
            out.append((v, "bias, not fixed with fix_biases=False"))
        elif name in NORMALIZATION_NAMES:
            out.append((v, "normalization scale/shift, not fixed with fix_batchnorm=False"))
        elif isinstance(layer, FixableLayer):
            out.append((v, f"not returned by {type(layer).__name__}.get_fixable_weights()"))
        else:
            out.append((v, "non-trainable weight, not fixed"))
    return out


def unsupported_layer_error(layer) -> ValueError:
    kept = kept_float_reason(layer)
    if kept is not None:
        return ValueError(
            f"Layer {layer.name!r} has nothing to fix: {kept}. fix_weights(model) leaves such "
            "layers as they are; pass only layers with trained weights.")
    return ValueError(
        f"Layer {layer.name!r} of class {type(layer).__name__} has weights but is not "
        "supported by tfmot_wfn.fix_weights. Supported: "
        + ", ".join(c.__name__ for c in SUPPORTED_LAYERS)
        + ", and any layer without weights. To opt in, make the layer implement "
        "tfmot_wfn.FixableLayer (define get_fixable_weights() returning the variables to "
        "fix), or leave it out of the layers you pass to fix_weights."
    )


def fixable_weights(layer, fix_biases: bool = True, fix_batchnorm: bool = True) -> list:
    """The variables of `layer` that take part in fixing, in a stable order.

    Raises:
      ValueError: the layer has weights and is not supported.
    """
    if isinstance(layer, FixableLayer):
        return list(layer.get_fixable_weights())
    if not layer.weights:
        return []
    if not isinstance(layer, SUPPORTED_LAYERS):
        raise unsupported_layer_error(layer)
    chosen = []
    for v in layer.weights:
        name = _short_name(v)
        if name in KERNEL_NAMES:
            chosen.append(v)
        elif name in BIAS_NAMES:
            if fix_biases:
                chosen.append(v)
        elif name in NORMALIZATION_NAMES:
            if fix_batchnorm:
                chosen.append(v)
        elif name in BUFFER_NAMES or not v.trainable:
            continue
        else:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) has a trainable weight "
                f"{name!r} that tfmot_wfn does not know how to fix. Implement "
                "tfmot_wfn.FixableLayer on a subclass to say which weights to fix."
            )
    return chosen
