"""Keras side of ``export_tflite(mode="int8")``: a fully integer TFLite file with exact weights.

TFLite's full-integer post-training quantization (int8 kernels with per-channel
scales, int32 biases, int8 activations calibrated on a representative dataset) is
run on the stripped model; then every weight whose values allow it is stored
EXACTLY (`tfmot_wfn.tflite.int8_exact`): int8 codes times a power-of-two scale per
output channel equal the Keras palette weight bit for bit. Where the converter
folded a BatchNorm into the layer, the channel scale is ``2^e * s`` (``s`` the
BatchNorm scale) and the codes are still the palette weight over ``2^e``.

```python
result = export_tflite(fixed, "model_int8.tflite", mode="int8",
                       representative_data=x_train[:200])
print(result.exact_channels, "/", result.total_channels)
```
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, List, Optional, Tuple

import numpy as np

from tfmot_wfn.core.batchnorm_affine import float32_batchnorm_scale
from tfmot_wfn.export.conversion import signature_input_names, tflite_converter
from tfmot_wfn.keras.batchnorm_folding import (
    batchnorm_values, folded_weights, foldable_layer_pairs, is_depthwise, is_transposed,
    kernel_key,
)
from tfmot_wfn.tflite import flatbuffer as fb
from tfmot_wfn.tflite.int8_exact import (
    WEIGHT_OPS, InexactChannel, Int8Target, Int8Weight, dequantized_weight, int8_weight_ops,
    rewrite_weight, write_int8_metadata,
)

#: At most this many samples of ``representative_data`` calibrate the activations.
DEFAULT_CALIBRATION_SAMPLES = 200
IO_TYPES = ("float32", "int8", "uint8")
UNMATCHED = (
    "no Keras weight matches it: the converter multiplied constants into it (e.g. an input "
    "Rescaling/Normalization, or a BatchNorm after a Dense folded into the next layer's "
    "inputs), so its values are no longer the palette weight; the converter's codes are kept")
MISSING_DATA = (
    "mode='int8' needs representative_data: inputs as fed to the model (a float array "
    "[N, ...], e.g. x_train[:200], or an iterable of input batches, lists for multi-input "
    "models); the converter calibrates the int8 activation ranges on them")


# ------------------------------------------------------------- calibration data
def _as_inputs(item, count: int) -> List[np.ndarray]:
    if count == 1:
        if isinstance(item, (list, tuple)):  # [x] or an (x, y) pair of a dataset
            item = item[0]
        return [np.asarray(item)]
    if not isinstance(item, (list, tuple)) or len(item) < count:
        raise ValueError(f"representative_data: the model has {count} inputs, so each batch "
                         f"must be a list of {count} arrays, got {type(item).__name__}")
    return [np.asarray(x) for x in item[:count]]


def calibration_samples(model, representative_data,
                        samples: int = DEFAULT_CALIBRATION_SAMPLES) -> List[List[np.ndarray]]:
    """The first ``samples`` inputs of ``representative_data``, one list of arrays per sample.

    ``representative_data``: a float array ``[N, ...]`` (single-input models), or an
    iterable of batches (arrays, ``(x, y)`` pairs, or lists of arrays for multi-input
    models); batches are split into samples of batch size 1 and the iterable is read
    only as far as needed.
    """
    if representative_data is None:
        raise ValueError(MISSING_DATA)
    if samples < 1:
        raise ValueError(f"calibration samples must be >= 1, got {samples}")
    if not getattr(model, "inputs", None):
        raise ValueError("mode='int8' calibrates each input of the model by its shape: export a "
                         "Functional or Sequential model (a subclassed model has no symbolic "
                         "inputs), or use mode='int8_weight_only'")
    count = len(model.inputs)
    if isinstance(representative_data, np.ndarray) or hasattr(representative_data, "shape"):
        if count != 1:
            raise ValueError(f"representative_data: the model has {count} inputs; pass an "
                             "iterable of batches, each a list of one array per input")
        batches: Iterable = [representative_data]
    else:
        batches = representative_data
    found: List[List[np.ndarray]] = []
    for item in batches:
        arrays = _as_inputs(item, count)
        for i in range(len(arrays[0])):
            found.append([a[i: i + 1] for a in arrays])
            if len(found) >= samples:
                break
        if len(found) >= samples:
            break
    if not found:
        raise ValueError(f"representative_data holds no samples. {MISSING_DATA}")
    _check_shapes(model, found[0])
    return [[a.astype(np.float32) for a in sample] for sample in found]


def _check_shapes(model, sample: List[np.ndarray]) -> None:
    for tensor, array in zip(model.inputs, sample):
        expected = tuple(tensor.shape)[1:]
        got = array.shape[1:]
        if len(expected) != len(got) or any(e is not None and e != g
                                            for e, g in zip(expected, got)):
            raise ValueError(f"representative_data: a sample has shape {got}, the model input "
                             f"{getattr(tensor, 'name', '')!r} expects {expected} (batch axis "
                             "first)")


# ------------------------------------------------------------------ conversion
def convert_int8(plain, samples: List[List[np.ndarray]], inference_input_type: str = "float32",
                 inference_output_type: str = "float32") -> bytes:
    """Full-integer TFLite bytes of a plain Keras model, calibrated on ``samples``."""
    import tensorflow as tf

    # Several inputs: by name, as the converter's calibration reads them (the file's signature).
    names = signature_input_names(plain)
    by_name = len(names) > 1 and len(set(names)) == len(names)

    def representative():
        for sample in samples:
            yield dict(zip(names, sample)) if by_name else sample

    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, inference_input_type)
        converter.inference_output_type = getattr(tf, inference_output_type)
        return bytes(converter.convert())

    with tflite_converter(plain) as converter:
        return configure(converter)


# ------------------------------------------------------------ Keras weights
@dataclasses.dataclass
class _Candidate:
    layer: str
    kernel: np.ndarray                   # Keras layout, output channels last, float64
    multiplier: Optional[np.ndarray]     # folded BatchNorm scale per channel (float32)
    bias: Optional[np.ndarray]           # the float bias the op adds (BatchNorm folded in)
    batchnorm: str = ""


def _layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):
            yield from _layers(layer)
        else:
            yield layer


def _batchnorm_scale(bn) -> np.ndarray:
    """``gamma / sqrt(var + eps)`` in float32, as TensorFlow folds it."""
    values = batchnorm_values(bn, np.float32)
    return float32_batchnorm_scale(values["gamma"], values["moving_variance"], bn.epsilon)


def _candidates(model) -> List[_Candidate]:
    from tfmot_wfn.keras.compat import short_name

    folded = {id(layer): bn for layer, bn in foldable_layer_pairs(model)}
    found = []
    for layer in _layers(model):
        values = {short_name(v): np.asarray(v.numpy(), np.float64) for v in layer.weights}
        main = kernel_key(layer, values)
        for key in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            kernel = values.get(key)
            if kernel is None or kernel.ndim < 2:
                continue
            if key == "depthwise_kernel" or is_depthwise(layer):
                kernel = kernel.reshape(kernel.shape[:-2] + (-1,))
            # (No int8 host takes a transposed convolution: its BatchNorm is not matched.)
            bn = folded.get(id(layer)) if key == main and not is_transposed(layer) else None
            if bn is not None:
                found.append(_Candidate(layer.name, kernel, _batchnorm_scale(bn),
                                        folded_weights(layer, bn)["bias"], bn.name))
            else:
                found.append(_Candidate(layer.name, kernel, None,
                                        values.get("bias") if key == main else None))
    return found


def _tflite_layout(kernel: np.ndarray, shape: Tuple[int, ...], axis: int) -> Optional[np.ndarray]:
    if kernel.size != int(np.prod(shape)) or kernel.shape[-1] != shape[axis]:
        return None
    moved = np.moveaxis(kernel, -1, 0) if axis == 0 else kernel
    return moved.reshape(shape)


def _input_scalars(model) -> List[np.ndarray]:
    """The scalar ``scale`` of each Rescaling layer, which the converter folds into the next
    convolution's weight (float32)."""
    found = []
    for layer in _layers(model):
        scale = getattr(layer, "scale", None) if type(layer).__name__ == "Rescaling" else None
        if scale is not None and np.size(scale) == 1 and float(np.ravel(scale)[0]) != 1.0:
            found.append(np.float32(np.ravel(scale)[0]))
    return found


def _variants(cand: _Candidate, scalars: List[np.ndarray]):
    """``(multiplier, bias, batchnorm)`` to try: with the folded BatchNorm, then without it
    (the converter may fold a BatchNorm after a Dense into the NEXT layer instead), then
    each with an input Rescaling's scale folded in too (bias: the converter's)."""
    label = f"BatchNorm {cand.batchnorm!r}" if cand.batchnorm else ""
    yield cand.multiplier, cand.bias, label
    if cand.multiplier is not None:
        yield None, None, ""
    channels = cand.kernel.shape[-1]
    for c in scalars:
        for multiplier, label in ((cand.multiplier, label), (None, "")):
            base = np.ones(channels, np.float32) if multiplier is None else multiplier
            yield (base * c).astype(np.float32), None, (
                f"{label} and " if label else "") + f"input Rescaling {float(c):.6g}"


def _match(candidates: List[_Candidate], model, subgraph, op, scalars: List[np.ndarray]
           ) -> Optional[Tuple[_Candidate, Int8Target]]:
    """The unused Keras weight the op's dequantized int8 weight rounds (within half a step)."""
    axis = WEIGHT_OPS[fb.op_name(model, op)]
    tensor = subgraph.tensors[int(op.inputs[1])]
    deq = dequantized_weight(model, subgraph, op)
    scales = np.asarray(tensor.quantization.scale, np.float64)
    shape = [1] * deq.ndim
    shape[axis] = -1
    step = scales.reshape(shape) if scales.size > 1 else scales[0]
    for cand in candidates:
        weight = _tflite_layout(cand.kernel, deq.shape, axis)
        if weight is None:
            continue
        for multiplier, bias, folded in _variants(cand, scalars):
            scaled = weight if multiplier is None else \
                weight * multiplier.astype(np.float64).reshape(shape)
            if np.all(np.abs(deq - scaled) <= 0.5 * step * (1 + 1e-3) + 1e-6 * np.abs(scaled)):
                return cand, Int8Target(layer=cand.layer, weight=weight, multiplier=multiplier,
                                        bias=bias, folded=folded)
    return None


# ---------------------------------------------------------------------- export
def rewrite_exact(data: bytes, plain, producer: str
                  ) -> Tuple[bytes, List[Int8Weight], List[InexactChannel]]:
    """Give every int8 weight of ``data`` exact power-of-two codes where its Keras weight allows."""
    model = fb.read_model(data)
    candidates, scalars = _candidates(plain), _input_scalars(plain)
    weights: List[Int8Weight] = []
    inexact: List[InexactChannel] = []
    for s, op in list(int8_weight_ops(model)):
        subgraph = model.subgraphs[s]
        found = _match(candidates, model, subgraph, op, scalars)
        if found is None:
            target = Int8Target(layer="", weight=None, reason=UNMATCHED)
        else:
            cand, target = found
            candidates = [c for c in candidates if c is not cand]
        report, bad = rewrite_weight(model, s, op, target)
        weights.append(report)
        inexact.extend(bad)
    write_int8_metadata(model, weights, inexact, producer)
    return fb.write_model(model), weights, inexact


def export_int8_bytes(model, representative_data, inference_input_type: str = "float32",
                      inference_output_type: str = "float32",
                      samples: int = DEFAULT_CALIBRATION_SAMPLES):
    """``(bytes, ExportResult)`` of ``export_tflite(model, mode="int8", ...)`` (no path)."""
    from tfmot_wfn.export.conversion import deployable
    from tfmot_wfn.utils.version import __version__
    from tfmot_wfn.export.palette_export import ExportResult, load_keras_model

    for name, value in (("inference_input_type", inference_input_type),
                        ("inference_output_type", inference_output_type)):
        if value not in IO_TYPES:
            raise ValueError(f"{name} must be one of {IO_TYPES}, got {value!r}")
    if representative_data is None:
        raise ValueError(MISSING_DATA)
    if isinstance(model, (str, os.PathLike)):
        model = load_keras_model(model)
    plain, pal = deployable(model)
    calibration = calibration_samples(plain, representative_data, samples)
    converted = convert_int8(plain, calibration, inference_input_type, inference_output_type)
    data, weights, inexact = rewrite_exact(converted, plain,
                                           f"tfmot_wfn {__version__}")
    return data, ExportResult(
        path="", mode="int8", bytes=len(data), palette_size=int(np.unique(pal).size),
        index_dtypes={}, indexed=[], non_palette=[], palette=np.unique(pal), batchnorm="fold",
        compact=False, int8_weights=weights, inexact=inexact,
        exact_channels=sum(w.exact_channels for w in weights),
        total_channels=sum(w.channels for w in weights), calibration_samples=len(calibration),
        inference_input_type=inference_input_type, inference_output_type=inference_output_type)


__all__ = ["DEFAULT_CALIBRATION_SAMPLES", "IO_TYPES", "calibration_samples", "convert_int8",
           "export_int8_bytes", "rewrite_exact"]
