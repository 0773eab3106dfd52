"""Keras model -> float TFLite bytes, and the deployable form of a fixed model.

```python
plain, pal = deployable(fixed)     # strip_fixing if wrapped, and the network palette
data = convert_to_tflite(plain)    # ordinary float32 TFLite bytes
```
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from typing import List, Tuple

import numpy as np

from tfmot_wfn.keras.cloning import computes_below_float32, float32_model
from tfmot_wfn.keras.compat import IS_LEGACY_KERAS, tf
from tfmot_wfn.keras.fix import strip_fixing
from tfmot_wfn.keras.network import is_wrapped
from tfmot_wfn.keras.report import palette


def deployable(model) -> Tuple[object, np.ndarray]:
    """``(plain model, palette)`` of a fixed model.

    A wrapped model (from `fix_weights`) is stripped with `tfmot_wfn.strip_fixing`
    and its palette holds the fixed values only; for a plain model the palette is
    every value of its fixable weights (kernels, biases, normalization gamma/beta).
    A model under a mixed precision policy is copied to compute in float32 (its weights
    are float32 variables, and the fixed values exact in its compute dtype).
    """
    if not hasattr(model, "layers") or not hasattr(model, "inputs"):
        raise TypeError(
            f"expected a Keras Functional or Sequential model, got {type(model).__name__}")
    pal = palette(model)
    plain = strip_fixing(model) if is_wrapped(model) else model
    if computes_below_float32(plain):  # mixed precision: the converter needs float32 ops
        plain = float32_model(plain)
    return plain, np.asarray(pal, dtype=np.float32)


def convert_to_tflite(model) -> bytes:
    """Float32 TFLite bytes of a plain Keras model (no quantization, default converter).

    The converter folds BatchNormalization into the preceding Conv/Dense and
    drops all-zero biases. The model is exported to a temporary SavedModel first (its
    progress message is not printed), whose signature names the outputs ``output_0``,
    ``output_1``, ... in the model's order, under Keras 3 and tf_keras alike.
    """
    if is_wrapped(model):
        raise ValueError("convert_to_tflite takes a plain model; call tfmot_wfn.strip_fixing first")
    with tempfile.TemporaryDirectory(prefix="tfmot_wfn_export_") as tmp:
        saved = os.path.join(tmp, "saved_model")
        export_saved_model(model, saved)
        return bytes(tf.lite.TFLiteConverter.from_saved_model(saved).convert())


def export_saved_model(model, path: str) -> None:
    """Write a plain Keras model as a SavedModel for the TFLite converter: one serving
    signature whose inputs are named after the model's inputs and whose outputs are
    ``output_0``, ``output_1``, ... in the model's order (``model.export``'s, under Keras 3)."""
    if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
        _save_legacy_serving(model, path)
        return
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(path, format="tf_saved_model", verbose=False)


def signature_input_names(model) -> List[str]:
    """The names `export_saved_model`'s signature gives the model's inputs, in the model's order."""
    if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
        return list(model.input_names)
    return [getattr(t, "name", "") for t in model.inputs]


def _save_legacy_serving(model, path: str) -> None:  # pragma: no cover - legacy CI job
    """Save a tf_keras model with the serving signature Keras 3's ``model.export`` writes:
    inputs named after the model's inputs, outputs ``output_0``, ``output_1``, ... in the
    model's order. (``TFLiteConverter.from_keras_model`` names the outputs after their
    layers, and an interpreter then lists them in an order of its own.)"""
    specs = [tf.TensorSpec(t.shape, t.dtype, name=name)
             for t, name in zip(model.inputs, signature_input_names(model))]

    def serve(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return {f"output_{i}": y for i, y in enumerate(outputs)}

    signature = tf.function(serve, input_signature=specs).get_concrete_function()
    tf.saved_model.save(model, path, signatures={"serving_default": signature})
