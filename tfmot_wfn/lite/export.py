"""`export_tflite`: a fixed Keras model -> a palette (or dense float) TFLite file.

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
import tempfile
from typing import Dict, List, Optional, Union

import numpy as np

from tfmot_wfn.lite import tflite_flatbuffer as fb
from tfmot_wfn.lite.palette_format import IndexedTensor, NonPaletteTensor, non_float_reason

MODES = ("palette", "dense")
DENSE_REASON = "dense export (mode='dense'): stored as float32"


@dataclasses.dataclass
class ExportResult:
    """What `export_tflite` wrote.

    ``index_dtypes``: tensor name -> ``"uint8"``/``"int16"`` for each palette-indexed
    weight; ``non_palette``: every other constant tensor, with the reason.
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
        if self.non_palette:
            lines.append(f"not palette-indexed ({len(self.non_palette)}):")
            for t in self.non_palette:
                lines.append(f"  {t.name} {list(t.shape)} {t.dtype.lower()} {t.bytes:,} bytes: "
                             f"{t.reason}")
        return "\n".join(lines)


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


def _write_atomically(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tfmot_wfn_", suffix=".tflite")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_keras_model(path: Union[str, os.PathLike]):
    """Load a ``.keras`` file (a stripped model, or one saved while fixing).

    ```python
    model = load_keras_model("wfn_demo_output/fixed_model.keras")
    ```
    """
    import tfmot_wfn
    from tfmot_wfn.keras.compat import keras

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no Keras model file at {path!r}")
    with tfmot_wfn.fixing_scope():
        return keras.models.load_model(path, compile=False)


def export_tflite_bytes(model, mode: str = "palette", palette=None):
    """Like `export_tflite` but returns ``(bytes, ExportResult without a path)``."""
    import tfmot_wfn
    from tfmot_wfn.lite.export_reasons import keras_explainer
    from tfmot_wfn.lite.keras_conversion import convert_to_tflite, deployable
    from tfmot_wfn.lite.palette_encoding import encode_palette

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(model, (str, os.PathLike)):
        model = load_keras_model(model)
    plain, model_palette = deployable(model)
    dense = convert_to_tflite(plain)
    if mode == "dense":
        return dense, ExportResult(path="", mode=mode, bytes=len(dense), palette_size=0,
                                   index_dtypes={}, indexed=[], non_palette=_dense_constants(dense))
    pal = model_palette if palette is None else np.asarray(palette, np.float32)
    data, meta, indexed, others = encode_palette(
        dense, pal, explain=keras_explainer(plain), producer=f"tfmot_wfn {tfmot_wfn.__version__}")
    return data, ExportResult(
        path="", mode=mode, bytes=len(data), palette_size=meta.palette_size,
        index_dtypes={t.name: t.index_dtype for t in indexed}, indexed=indexed,
        non_palette=others, palette=np.unique(pal.astype(np.float32)))


def export_tflite(
    model,
    path: Union[str, os.PathLike],
    mode: str = "palette",
    palette: Optional[np.ndarray] = None,
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
        ``"dense"``: the ordinary float32 TFLite of the stripped model.
      palette: override the palette (values missing from it are not indexed).

    Returns:
      An `ExportResult`: path, bytes, palette size, index dtype per tensor, and
      every constant tensor left as float (or int) with the reason, e.g. a
      BatchNorm the converter folded into a conv (use `fold_batchnorm` before
      fixing to avoid it).

    Raises:
      ValueError: unknown mode, a palette of more than 32768 values (the model
        does not look fixed), or a model that cannot be converted.
    """
    data, result = export_tflite_bytes(model, mode=mode, palette=palette)
    path = os.fspath(path)
    _write_atomically(path, data)
    result.path = path
    return result
