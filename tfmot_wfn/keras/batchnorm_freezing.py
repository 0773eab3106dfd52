"""Freeze BatchNormalization into its scale-and-shift form, so that every stored value can be fixed.

An inference-mode BatchNormalization computes ``x * s + t`` per channel with
``s = gamma / sqrt(moving_variance + epsilon)`` and ``t = beta - moving_mean * s``.
Its moving statistics are not trained, so `fix_weights` leaves them float: in a
model with BatchNorm they are most of the distinct values the model stores.

`freeze_batchnorm` rewrites each BatchNormalization so that ``gamma = s``,
``beta = t``, ``moving_mean = 0``, ``moving_variance = 1`` and ``epsilon = 0``, and
marks it non-trainable (Keras then always runs it in inference mode and never
updates its statistics). The frozen model computes the same function (to float32
rounding); after `fix_weights` and training, its gamma and beta are palette values
like every kernel and bias, and the statistics are the constants 0 and 1: the
whole model stores palette values only (plus 1.0).

```python
frozen = tfmot_wfn.freeze_batchnorm(trained_float_model)   # new model; the input is unchanged
fixed = tfmot_wfn.fix_weights(frozen)                       # fix, fine-tune, strip as usual
```

Frozen BatchNorms no longer normalize batches while fine-tuning, and their scale
and shift are not trained (only fixed): use a fine-tuning learning rate well below
the float training's. The exporter still folds them into the layer before them
(``export_tflite(batchnorm="scale_op")`` keeps their scale as a MUL).
"""

from __future__ import annotations

import numpy as np

from tfmot_wfn.keras.batchnorm_folding import batchnorm_scale_shift
from tfmot_wfn.keras.cloning import clone_model, copy_layer, rebuilt_layer, walk_layers
from tfmot_wfn.keras.compat import IS_LEGACY_KERAS, keras, short_name
from tfmot_wfn.keras.fixing_wrapper import WeightFixingWrapper


def _frozen_copy(bn):
    scale, shift = batchnorm_scale_shift(bn)
    config = bn.get_config()
    config.update(epsilon=0.0, scale=True, center=True, trainable=False)
    if IS_LEGACY_KERAS and "fused" in config:  # pragma: no cover - legacy CI job
        config["fused"] = False  # the fused kernel raises epsilon to 1.001e-5
    new = rebuilt_layer(bn, config)
    dtype = np.dtype(keras.backend.standardize_dtype(new.weights[0].dtype)) \
        if not IS_LEGACY_KERAS else np.float32
    by_name = {"gamma": scale, "beta": shift, "moving_mean": np.zeros_like(scale),
               "moving_variance": np.ones_like(scale)}
    new.set_weights([by_name[short_name(v)].astype(dtype).reshape(tuple(v.shape))
                     for v in new.weights])
    return new


def freeze_batchnorm(model):
    """A new model with every BatchNormalization in frozen scale-and-shift form (see module).

    `model` is not changed; nested models are copied too. Raises `TypeError` for
    anything but a Keras model, `ValueError` for a model made by `fix_weights`
    (freeze the float model first: fixing then covers the frozen scale and shift).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"freeze_batchnorm expects a Keras model, got {type(model).__name__}; pass the "
            "trained float model.")
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built: call it on data or build it before freezing.")
    if any(isinstance(layer, WeightFixingWrapper) for layer in walk_layers(model)):
        raise ValueError(
            f"model {model.name!r} was made by tfmot_wfn.fix_weights: freeze BatchNorm in the "
            "float model before fixing (freeze_batchnorm(float_model), then fix_weights), so "
            "that the frozen scale and shift are fixed too.")

    def clone_function(layer):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.built:
            return _frozen_copy(layer)
        return copy_layer(layer)

    return clone_model(model, clone_function)


__all__ = ["freeze_batchnorm"]
