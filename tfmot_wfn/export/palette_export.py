"""`export_tflite`: a fixed Keras model -> a palette (or exact int8/float16 weights, dense float,
exact int8) TFLite file.

```python
import tfmot_wfn
from tfmot_wfn.lite import export_tflite, load_interpreter

result = export_tflite(fixed_model, "model.tflite")        # mode="palette"
print(result)                      # bytes, palette size, index dtypes, non-palette tensors
interpreter = load_interpreter("model.tflite")
```
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Dict, List, Optional, Union

import numpy as np

from tfmot_wfn.export.batchnorm_mul import keep_batchnorm_scales
from tfmot_wfn.export.conversion import convert_to_tflite, deployable
from tfmot_wfn.export.tensor_reasons import keras_explainer, keras_labeler, keras_origins
from tfmot_wfn.keras.compat import IS_LEGACY_KERAS, keras
from tfmot_wfn.keras.fix import fixing_scope
from tfmot_wfn.utils.atomic_files import write_bytes_atomically
from tfmot_wfn.utils.version import __version__
from tfmot_wfn.tflite import flatbuffer as fb
from tfmot_wfn.tflite.exact_weights import StoredWeight, encode_exact_weights
from tfmot_wfn.tflite.int8_exact import InexactChannel, Int8Weight
from tfmot_wfn.tflite.palette_encoding import encode_palette
from tfmot_wfn.tflite.scale_ops import KeptScale
from tfmot_wfn.tflite.palette_format import IndexedTensor, NonPaletteTensor, non_float_reason

MODES = ("palette", "int8_weight_only", "float16", "dense", "int8")
#: The modes whose weights a stock interpreter expands at load (`tflite.exact_weights`).
WEIGHT_MODES = ("int8_weight_only", "float16")
BATCHNORM_MODES = ("scale_op", "fold")
DENSE_REASON = "dense export (mode='dense'): stored as float32"


@dataclasses.dataclass
class ExportResult:
    """What `export_tflite` wrote.

    ``index_dtypes``: tensor name -> ``"uint8"``/``"int16"`` for each palette-indexed
    weight; ``non_palette``: every other constant tensor, with the reason;
    ``batchnorm``: how BatchNorms after a conv/dense were exported
    (``"scale_op"``/``"fold"``); ``batchnorm_scales``: the BatchNorms kept as a MUL;
    ``compact``: whether converter names and other unread bytes were dropped (tensor
    names are then the short ones of the file, ``t<index>`` for unnamed tensors).

    ``mode="int8_weight_only"`` / ``"float16"`` only: ``stored_weights``, the constants stored
    as exact int8 or float16 (the others, in ``non_palette``, stay float32 with the reason).

    ``mode="int8"`` only: ``int8_weights`` (each int8 weight: exact channels of all),
    ``exact_channels`` / ``total_channels`` over all of them, ``inexact`` (each channel
    stored with the converter's rounded codes: reason and worst-case error), the
    number of ``calibration_samples`` used and the I/O types.
    """

    path: str
    mode: str
    bytes: int
    palette_size: int
    index_dtypes: Dict[str, str]
    indexed: List[IndexedTensor]
    non_palette: List[NonPaletteTensor]
    palette: np.ndarray = dataclasses.field(
        repr=False, default_factory=lambda: np.zeros(0, np.float32))
    batchnorm: str = "scale_op"
    batchnorm_scales: List[KeptScale] = dataclasses.field(default_factory=list)
    compact: bool = True
    stored_weights: List[StoredWeight] = dataclasses.field(default_factory=list)
    int8_weights: List[Int8Weight] = dataclasses.field(default_factory=list)
    inexact: List[InexactChannel] = dataclasses.field(default_factory=list)
    exact_channels: int = 0
    total_channels: int = 0
    calibration_samples: int = 0
    inference_input_type: str = "float32"
    inference_output_type: str = "float32"

    @property
    def indexed_elements(self) -> int:
        return sum(t.elements for t in self.indexed)

    def to_dict(self) -> Dict:
        out = dataclasses.asdict(self)
        out["palette"] = [float(v) for v in self.palette]
        return out

    def __str__(self) -> str:
        lines = [f"{self.path}: {self.bytes:,} bytes ({self.mode} TFLite)"]
        if self.mode == "palette":
            dtypes = sorted(set(self.index_dtypes.values())) or ["-"]
            lines.append(f"palette: {self.palette_size} float32 values shared by "
                         f"{len(self.indexed)} tensors ({self.indexed_elements:,} weights, "
                         f"{'/'.join(dtypes)} indices)")
            for k in self.batchnorm_scales:
                lines.append(f"BatchNorm {k.batchnorm!r} kept as MUL by {k.scale} after "
                             f"{k.layer!r} ({k.op}, {k.channels} channels): weight palette-indexed")
        if self.mode in WEIGHT_MODES:
            for dtype in ("int8", "float16"):
                found = [t for t in self.stored_weights if t.dtype == dtype]
                if found:
                    lines.append(f"{dtype}: {len(found)} tensors "
                                 f"({sum(t.elements for t in found):,} weights) stored as exact "
                                 f"{dtype}, expanded to float32 by the interpreter at load")
            for k in self.batchnorm_scales:
                lines.append(f"BatchNorm {k.batchnorm!r} kept as MUL by {k.scale} after "
                             f"{k.layer!r} ({k.op}, {k.channels} channels): weight kept exact")
        if self.mode == "int8":
            lines.extend(_int8_lines(self))
        if self.non_palette:
            heading = "kept as stored" if self.mode in WEIGHT_MODES else "not palette-indexed"
            lines.append(f"{heading} ({len(self.non_palette)}):")
            for t in self.non_palette:
                lines.append(f"  {t.name} {list(t.shape)} {t.dtype.lower()} {t.bytes:,} bytes: "
                             f"{t.reason}")
        return "\n".join(lines)


def _int8_lines(result: "ExportResult") -> List[str]:
    lines = [f"int8 weights: {result.exact_channels}/{result.total_channels} output channels "
             "exact (int8 code * power-of-two scale == Keras weight); "
             f"{result.inference_input_type} input, {result.inference_output_type} output; "
             f"activations calibrated on {result.calibration_samples} samples"]
    for w in result.int8_weights:
        bn = f", {w.folded} folded into the scales" if w.folded else ""
        bias = f", bias {w.bias_exact}/{w.bias_channels} exact" if w.bias_channels else ""
        lines.append(f"  {w.layer or w.tensor} ({w.op}): {w.exact_channels}/{w.channels} exact, "
                     f"{w.distinct_codes} distinct codes, {w.bytes:,} bytes{bias}{bn}")
    if result.inexact:
        lines.append(f"not exact ({len(result.inexact)}):")
        for i in result.inexact:
            where = "tensor" if i.channel < 0 else f"channel {i.channel}"
            lines.append(f"  {i.layer or i.tensor} {where}: max error {i.max_error:.3g}: "
                         f"{i.reason}")
    return lines


def _dense_constants(data: bytes) -> List[NonPaletteTensor]:
    model = fb.read_model(data)
    found = []
    for s, _, tensor in fb.iter_tensors(model):
        if not fb.is_constant(model, tensor):
            continue
        shape = fb.tensor_shape(tensor)
        dtype = fb.type_name(tensor.type)
        reason = DENSE_REASON if dtype == "FLOAT32" else non_float_reason(dtype)
        found.append(NonPaletteTensor(
            subgraph=s, name=fb.tensor_name(tensor), shape=shape, dtype=dtype,
            elements=int(np.prod(shape)) if shape else 1,
            bytes=fb.buffer_bytes(model, tensor.buffer), reason=reason))
    return found


def load_keras_model(path: Union[str, os.PathLike]):
    """Load a ``.keras`` file (a stripped model, or one saved while fixing).

    ```python
    model = load_keras_model("wfn_demo_output/fixed_model.keras")
    ```
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no Keras model file at {path!r}")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a .keras file (a .keras file is a zip archive): "
                         "pass a model saved with model.save('....keras')")
    if IS_LEGACY_KERAS and zipfile.is_zipfile(path):
        saved_by = _saved_keras_version(path)
        if saved_by is not None and saved_by.split(".")[0] not in ("", "2"):
            raise ValueError(
                f"{path!r} was saved by Keras {saved_by}; tf_keras (TF_USE_LEGACY_KERAS=1) "
                "cannot read it: run without TF_USE_LEGACY_KERAS, or save the model from tf_keras")
    try:
        with fixing_scope():
            return keras.models.load_model(path, compile=False)
    except (zipfile.BadZipFile, KeyError) as e:  # a damaged archive (bad CRC, missing member)
        raise ValueError(f"{path!r} is a damaged .keras file ({e}); save the model again or "
                         "use a backup") from e


def _saved_keras_version(path: str) -> Optional[str]:
    """The ``keras_version`` in a .keras file's metadata.json, or None."""
    import json

    try:
        with zipfile.ZipFile(path) as archive:
            return str(json.loads(archive.read("metadata.json")).get("keras_version", "")) or None
    except (KeyError, ValueError, zipfile.BadZipFile, OSError):
        return None


def _check_options(mode: str, batchnorm: str, index_dtype: Optional[str]) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if batchnorm is not None and batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
    if index_dtype not in (None, "uint8", "int16"):
        raise ValueError(f"index_dtype must be None, 'uint8' or 'int16', got {index_dtype!r}")


def _kept_labels(kept: List[KeptScale]) -> Dict:
    """``(subgraph, tensor name) -> short name`` of the tensors of the BatchNorms kept as MULs."""
    labels = {}
    for k in kept:
        labels[(k.subgraph, k.scale)] = f"{k.batchnorm}/scale"
        if k.bias:
            labels[(k.subgraph, k.bias)] = f"{k.layer}/bias"
    return labels


def _renamed_scales(kept: List[KeptScale], entries: List[Dict]) -> List[KeptScale]:
    """``kept`` with the tensor names of the written file (from the metadata entries)."""
    by_layer = {(e["subgraph"], e["layer"], e["batchnorm"]): e for e in entries}
    out = []
    for k in kept:
        e = by_layer.get((k.subgraph, k.layer, k.batchnorm))
        out.append(k if e is None else dataclasses.replace(
            k, scale=e["tensor"], weight=e.get("weight", k.weight), bias=e.get("bias", k.bias)))
    return out


def _exact_weights_bytes(dense: bytes, plain, pal, batchnorm: str, mode: str, compact: bool):
    """``mode="int8_weight_only"`` / ``"float16"``: the weights of ``dense`` stored as exact int8 or
    float16; with ``batchnorm="scale_op"`` the BatchNorm scales are kept as MULs first, so
    that the weights before them stay palette values."""
    kept = []
    if batchnorm == "scale_op":
        dense, kept, _ = keep_batchnorm_scales(dense, plain, pal)
    roles = {}  # what the tensors of a kept BatchNorm are, before why they stay float32
    for k in kept:
        roles[(k.subgraph, k.scale)] = f"BatchNorm {k.batchnorm!r} scale, a MUL after {k.layer!r}"
        if k.bias:
            roles[(k.subgraph, k.bias)] = (f"bias of {k.layer!r}: BatchNorm {k.batchnorm!r} "
                                           "shift divided by its scale")
    base_label, kept_labels = keras_labeler(plain), _kept_labels(kept)
    index_of = {}  # (subgraph, name in the converter's file) -> tensor index

    def label(t):
        index_of[(t.subgraph, t.name)] = t.index
        return kept_labels.get((t.subgraph, t.name)) or base_label(t)

    data, stored, left = encode_exact_weights(
        dense, int8=mode == "int8_weight_only",
        explain=lambda s, i, name, values: roles.get((s, name)),
        producer=f"tfmot_wfn {__version__}", compact=compact, label=label)
    if compact:  # the kept BatchNorms name their tensors as the written file does
        written = {(t.subgraph, t.index): t.name for t in list(stored) + list(left)}

        def renamed(s: int, name: str) -> str:
            return written.get((s, index_of.get((s, name), -1)), name) if name else name

        kept = [dataclasses.replace(k, weight=renamed(k.subgraph, k.weight),
                                    bias=renamed(k.subgraph, k.bias),
                                    scale=renamed(k.subgraph, k.scale)) for k in kept]
    return data, ExportResult(
        path="", mode=mode, bytes=len(data), palette_size=0, index_dtypes={}, indexed=[],
        non_palette=left, batchnorm=batchnorm, batchnorm_scales=kept, compact=compact,
        stored_weights=stored)


def export_tflite_bytes(model, mode: str = "palette", palette=None,
                        batchnorm: Optional[str] = None,
                        index_dtype: Optional[str] = None, compact: bool = True,
                        representative_data=None, inference_input_type: str = "float32",
                        inference_output_type: str = "float32"):
    """Like `export_tflite` but returns ``(bytes, ExportResult without a path)``."""
    _check_options(mode, batchnorm, index_dtype)
    if batchnorm is None:  # int8 weights take the converter's folded BatchNorm exactly
        batchnorm = "fold" if mode == "int8_weight_only" else "scale_op"
    if mode != "int8" and (representative_data is not None or inference_input_type != "float32"
                           or inference_output_type != "float32"):
        raise ValueError("representative_data and inference_input_type/inference_output_type "
                         f"are options of mode='int8', not of mode={mode!r}")
    if mode == "int8":
        from tfmot_wfn.export.int8_export import export_int8_bytes

        return export_int8_bytes(model, representative_data, inference_input_type,
                                 inference_output_type)
    if isinstance(model, (str, os.PathLike)):
        model = load_keras_model(model)
    plain, model_palette = deployable(model)
    dense = convert_to_tflite(plain)
    if mode in WEIGHT_MODES:
        return _exact_weights_bytes(dense, plain, model_palette if palette is None else palette,
                                    batchnorm, mode, compact)
    if mode == "dense":
        return dense, ExportResult(path="", mode=mode, bytes=len(dense), palette_size=0,
                                   index_dtypes={}, indexed=[], non_palette=_dense_constants(dense),
                                   batchnorm="fold", compact=False)
    pal = model_palette if palette is None else np.asarray(palette, np.float32)
    kept, reasons = [], {}
    if batchnorm == "scale_op":
        dense, kept, reasons = keep_batchnorm_scales(dense, plain, pal)
    origins = keras_origins(plain)
    base, base_label = keras_explainer(plain, origins), keras_labeler(plain, origins)
    kept_labels = _kept_labels(kept)

    def explain(t):
        return reasons.get((t.subgraph, t.name)) or base(t)

    def label(t):
        return kept_labels.get((t.subgraph, t.name)) or base_label(t)

    data, meta, indexed, others = encode_palette(
        dense, pal, explain=explain, producer=f"tfmot_wfn {__version__}",
        index_dtype=index_dtype, batchnorm_scales=kept, compact=compact, label=label)
    if compact:
        kept = _renamed_scales(kept, meta.batchnorm_scales)
    return data, ExportResult(
        path="", mode=mode, bytes=len(data), palette_size=meta.palette_size,
        index_dtypes={t.name: t.index_dtype for t in indexed}, indexed=indexed,
        non_palette=others, palette=np.unique(pal.astype(np.float32)), batchnorm=batchnorm,
        batchnorm_scales=kept, compact=compact)


def export_tflite(
    model,
    path: Union[str, os.PathLike],
    mode: str = "palette",
    palette: Optional[np.ndarray] = None,
    batchnorm: Optional[str] = None,
    index_dtype: Optional[str] = None,
    compact: bool = True,
    representative_data=None,
    inference_input_type: str = "float32",
    inference_output_type: str = "float32",
) -> ExportResult:
    """Write a fixed Keras model as a TFLite file.

    Args:
      model: a model from `tfmot_wfn.fix_weights` (stripped here with `strip_fixing`;
        its palette is the fixed values), or a stripped / plain fixed model (its
        palette is every value of its kernels, biases and normalization gamma/beta),
        or the path of a ``.keras`` file holding either.
      path: the ``.tflite`` file to write (folders are created).
      mode: ``"palette"`` (default): every constant float32 tensor whose values are
        all palette values is stored as indices (uint8 for K <= 256, int16 up to
        32768) into ONE shared float32 palette tensor, decoded in the graph by
        CAST + GATHER right before the op that uses it; the file runs on any stock
        interpreter, and `load_interpreter` decodes it once for float speed.
        ``"int8_weight_only"``: the weights of convolutions and fully connected layers as
        int8 codes with one float32 scale per output channel wherever ``code * scale``
        is the float32 weight value for value (WFN values are sums of a few powers of
        two, so most channels are, and all after ``fix_weights(..., int8_exact=True)``;
        the converter's folded BatchNorm scale goes into the channel scale), else as
        float16 where that is exact, expanded by a ``DEQUANTIZE`` that stock interpreters
        (LiteRT's XNNPACK, tflite-runtime) run once at load: a third to a half of the
        float file, the float model's speed on a phone with no decoder of ours, and the
        float file's outputs. Activations stay float (unlike ``"int8"``). ``batchnorm`` defaults to
        ``"fold"`` here. ``"float16"``: float16 only (half the float file; DEQUANTIZE
        version 3 where an old interpreter lacks per-channel int8's version 5);
        ``batchnorm`` defaults to ``"scale_op"`` (the folded weights are not float16
        values). The others stay float32, listed with the reason (see
        `tfmot_wfn.tflite.exact_weights`). ``index_dtype`` does not apply to these
        two modes; ``compact`` does, as in palette mode.
        ``"dense"``: the ordinary float32 TFLite of the stripped model.
        ``"int8"``: a fully integer TFLite model (TFLite's full-integer
        quantization: int8 weights per output channel, int32 biases, int8
        activations calibrated on ``representative_data``) whose weights are
        stored EXACTLY where their values allow: int8 code times a power-of-two
        scale per channel == the Keras weight bit for bit (``2^e * s`` where the
        converter folded a BatchNorm scale ``s`` in); the others keep the
        converter's rounded codes and are listed in ``result.inexact`` with the
        reason and worst-case error (see `tfmot_wfn.export.int8_export`). The
        ``palette``/``batchnorm``/``index_dtype``/``compact`` options do not apply.
      palette: override the palette (values missing from it are not indexed).
      batchnorm: what to do with a BatchNorm right after a Conv/DepthwiseConv/Dense or a
        transposed conv, which the converter folds into it (``W * s``, no longer palette
        values).
        ``"scale_op"`` (the default but for ``"int8_weight_only"``): the layer's palette
        weight ``W`` is stored as
        indices, its bias becomes ``b_folded / s`` and a ``MUL`` by the float32
        per-channel scale ``s = gamma / sqrt(var + eps)`` follows it, carrying the
        fused activation (a layer whose scale is 0 or tiny in some channel stays
        folded, with the reason); ``load_interpreter(decode=True)`` folds the MUL
        back into the static weights. ``"fold"``: keep the converter's folded
        float weights (in a palette file listed as not palette-indexed, with the
        reason; in an ``"int8_weight_only"`` file int8 codes whose channel scales carry
        the BatchNorm scale); or fold BatchNorm into the float model before fixing
        (`fold_batchnorm`).
      index_dtype: force ``"uint8"`` or ``"int16"`` indices; None (default) picks
        uint8 for K <= 256 and int16 above.
      compact: every mode but ``"dense"`` and ``"int8"``. True (default): drop the
        bytes no interpreter reads (see `tfmot_wfn.tflite.compaction`): the converter's
        long fused tensor names (every tensor but the model's inputs/outputs, the
        palette and the weights is unnamed, shown as ``t<index>``; each weight is named
        after the Keras weight it holds, e.g. ``"conv1/kernel"``, ``"bn1/scale"``),
        empty quantization tables, the decode ops' default options, the converter's
        informational metadata, per-tensor empty buffers, and its dynamic-batch
        reshape idiom (one RESHAPE instead of SHAPE/STRIDED_SLICE/PACK/RESHAPE). On
        the demo CNN: about 12.9 KB instead of 15.6 KB (the float file: 43.3 KB). The
        int8_weight_only and float16 files keep their buffers 16-byte aligned.
        False keeps
        the converter's graph, names and tables. The ``tfmot_wfn`` metadata is
        compressed either way; the outputs are the same.

      representative_data: ``mode="int8"`` only (required there): inputs as fed to
        the model, a float array ``[N, ...]`` or an iterable of input batches
        (``(x, y)`` pairs are read as ``x``; lists of arrays for multi-input
        models). The first 200 samples
        (`tfmot_wfn.export.int8_export.DEFAULT_CALIBRATION_SAMPLES`) calibrate the
        activation ranges.
      inference_input_type, inference_output_type: ``mode="int8"`` only:
        ``"float32"`` (default: the file quantizes its input and dequantizes its
        output), ``"int8"`` or ``"uint8"`` (the caller quantizes with the input
        tensor's scale and zero point).

    Returns:
      An `ExportResult`: path, bytes, palette size, index dtype per tensor, the
      BatchNorms kept as a MUL, and every constant tensor left as float (or int)
      with the reason.

    Raises:
      ValueError: unknown mode / batchnorm / index_dtype, a palette of more than
        32768 values (the model does not look fixed), a model that cannot be
        converted, or ``mode="int8"`` without ``representative_data``.
    """
    data, result = export_tflite_bytes(
        model, mode=mode, palette=palette, batchnorm=batchnorm, index_dtype=index_dtype,
        compact=compact, representative_data=representative_data,
        inference_input_type=inference_input_type, inference_output_type=inference_output_type)
    path = os.fspath(path)
    write_bytes_atomically(path, data)
    result.path = path
    return result
