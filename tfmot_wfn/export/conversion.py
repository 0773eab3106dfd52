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
from typing import Iterator, List, Tuple

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
    ``output_1``, ... in the model's order (a dict's keys for dict outputs), under Keras 3
    and tf_keras alike.
    """
    if is_wrapped(model):
        raise ValueError("convert_to_tflite takes a plain model; call tfmot_wfn.strip_fixing first")
    with tflite_converter(model) as converter:
        return bytes(converter.convert())


@contextlib.contextmanager
def tflite_converter(model) -> Iterator:
    """A ``tf.lite.TFLiteConverter`` of a plain Keras model, from the SavedModel that
    `_export_saved_model` writes in a temporary folder (removed afterwards). A subclassed
    tf_keras model, which has no symbolic inputs to name, converts as
    ``TFLiteConverter.from_keras_model`` does."""
    if IS_LEGACY_KERAS and not model.inputs:  # pragma: no cover - legacy CI job
        yield tf.lite.TFLiteConverter.from_keras_model(model)
        return
    with tempfile.TemporaryDirectory(prefix="tfmot_wfn_export_") as tmp:
        saved = os.path.join(tmp, "saved_model")
        _export_saved_model(model, saved)
        yield tf.lite.TFLiteConverter.from_saved_model(saved)


def _export_saved_model(model, path: str) -> None:
    """Write a plain Keras model (with symbolic inputs, under tf_keras) as a SavedModel for the
    TFLite converter: one serving signature, the model's inputs under their names, its
    outputs ``output_0``, ``output_1``, ... in the model's order (a dict's keys for dict
    outputs): ``model.export``'s under Keras 3, the same signature saved by hand under tf_keras."""
    if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
        _save_legacy_serving(model, path)
        return
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(path, format="tf_saved_model", verbose=False)


def signature_input_names(model) -> List[str]:
    """The names the converted file's signature gives the model's inputs, in the model's
    order: the Keras input names (the SavedModel in between may change them into
    ``tf.function`` parameter names, ``In-A`` into ``In_A``; the TFLite signature, and the
    converter's calibration, which reads samples by it, keep the Keras names). Empty for a
    model without symbolic inputs."""
    if IS_LEGACY_KERAS:  # pragma: no cover - legacy CI job
        return list(model.input_names or [])
    return [getattr(t, "name", "") for t in (model.inputs or [])]


def _save_legacy_serving(model, path: str) -> None:  # pragma: no cover - legacy CI job
    """Save a tf_keras model with the serving signature Keras 3's ``model.export`` writes
    (``TFLiteConverter.from_keras_model`` names the outputs after their layers, and an
    interpreter then lists them in an order of its own)."""
    specs = [tf.TensorSpec(t.shape, t.dtype, name=name)
             for t, name in zip(model.inputs, signature_input_names(model))]

    def serve(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        # A list or a tensor: TensorFlow names them output_0, output_1, ...; a dict: its keys.
        return list(outputs) if isinstance(outputs, tuple) else outputs

    signature = tf.function(serve, input_signature=specs).get_concrete_function()
    tf.saved_model.save(model, path, signatures={"serving_default": signature})
