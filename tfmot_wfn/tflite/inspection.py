"""`inspect`: what a (palette, int8 weight-only, float16, int8 or dense) TFLite file stores, tensor
by tensor.

```python
report = inspect("model.tflite")
print(report)                     # the table
report.palette                    # the shared palette (float32), None for a dense file
report.index_dtypes               # {"conv1/kernel": "uint8", ...} (compact files)
[(t.name, t.reason) for t in report.non_palette]
```
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from tfmot_wfn.tflite import flatbuffer as fb
from tfmot_wfn.tflite.exact_weights import read_weights_metadata
from tfmot_wfn.tflite.int8_exact import (
    InexactChannel, Int8Weight, int8_tensor_reasons, read_int8_metadata,
)
from tfmot_wfn.tflite.palette_format import (
    check_read_palette,
    display_name,
    find_decoders,
    non_float_reason,
    palette_tensor_index,
    read_metadata,
)

NO_METADATA_REASON = "no tfmot_wfn palette metadata: a dense float TFLite file"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One constant tensor: how it is stored, its size and, if not indexed, why.

    ``name``: the tensor's name in the file (for a palette-indexed weight, the name
    of the decoded tensor the ops read), or ``t<index>`` for a tensor a compact file
    left unnamed; ``index``: its position in the subgraph's tensors (as in the
    interpreter's ``get_tensor_details()`` for subgraph 0). ``stored_as``:
    ``"uint8"``/``"int16"`` indices, or the tensor's own type (``"float32"``,
    ``"int32"``...). ``unique_values``: distinct values it holds (for indices:
    palette entries it uses). ``bytes``: its data bytes.
    """

    subgraph: int
    name: str
    shape: tuple
    elements: int
    stored_as: str
    unique_values: int
    bytes: int
    palette_indexed: bool
    reason: str = ""
    index: int = -1


@dataclasses.dataclass
class TFLiteInspection:
    """The result of `inspect`; ``str()`` prints a table, ``to_dict()`` gives JSON-ready data."""

    path: str
    file_bytes: int
    format: str
    format_version: Optional[int]
    producer: str
    palette: Optional[np.ndarray]
    palette_bytes: int
    index_dtype: Optional[str]
    tensors: List[TensorInfo]
    constant_bytes: int
    int8_weights: List[Int8Weight] = dataclasses.field(default_factory=list)
    inexact: List[InexactChannel] = dataclasses.field(default_factory=list)

    @property
    def exact_channels(self) -> int:
        """int8 files (``format == "int8"``): output channels stored exactly."""
        return sum(w.exact_channels for w in self.int8_weights)

    @property
    def total_channels(self) -> int:
        return sum(w.channels for w in self.int8_weights)

    @property
    def indexed(self) -> List[TensorInfo]:
        return [t for t in self.tensors if t.palette_indexed]

    @property
    def non_palette(self) -> List[TensorInfo]:
        return [t for t in self.tensors if not t.palette_indexed]

    @property
    def palette_size(self) -> int:
        return 0 if self.palette is None else int(self.palette.size)

    @property
    def index_dtypes(self) -> Dict[str, str]:
        return {t.name: t.stored_as for t in self.indexed}

    @property
    def indexed_elements(self) -> int:
        return sum(t.elements for t in self.indexed)

    @property
    def indexed_bytes(self) -> int:
        return sum(t.bytes for t in self.indexed)

    @property
    def _weight_forms(self) -> Tuple[str, ...]:
        """The stored dtypes of float weights besides float32: float16, and int8 in an int8
        weight-only file (in an int8 file int8 tensors are integer weights, counted apart)."""
        return ("int8", "float16") if self.format == "int8_weight_only" else ("float16",)

    @property
    def float_elements(self) -> int:
        """Float weights not palette-indexed (stored float32 or in one of `_weight_forms`)."""
        kinds = ("float32",) + self._weight_forms
        return sum(t.elements for t in self.non_palette if t.stored_as in kinds)

    @property
    def other_bytes(self) -> int:
        """Data bytes of the constants that are not palette-indexed."""
        return sum(t.bytes for t in self.non_palette)

    @property
    def overhead_bytes(self) -> int:
        """Graph, names, metadata and alignment: the file minus all tensor data."""
        return self.file_bytes - self.constant_bytes

    def to_dict(self) -> Dict:
        out = dataclasses.asdict(self)
        out["palette"] = None if self.palette is None else [float(v) for v in self.palette]
        out.update(palette_size=self.palette_size, indexed_elements=self.indexed_elements,
                   indexed_bytes=self.indexed_bytes, other_bytes=self.other_bytes,
                   overhead_bytes=self.overhead_bytes, exact_channels=self.exact_channels,
                   total_channels=self.total_channels)
        return out

    def __str__(self) -> str:
        head = f"{self.path or '<bytes>'}: {self.file_bytes:,} bytes, {self.format} TFLite"
        if self.format_version is not None:
            head += f" (format v{self.format_version})"
        lines = [head]
        if self.palette is not None:
            lines.append(f"palette: {self.palette_size} float32 values "
                         f"({self.palette_bytes} bytes), {self.index_dtype} indices: "
                         + ", ".join(f"{v:g}" for v in self.palette))
        rows = [("tensor", "shape", "elements", "stored as", "unique", "bytes", "palette")]
        for t in self.tensors:
            rows.append((t.name, "x".join(str(d) for d in t.shape) or "scalar", f"{t.elements:,}",
                         t.stored_as, str(t.unique_values) if t.unique_values >= 0 else "-",
                         f"{t.bytes:,}", "yes" if t.palette_indexed else "no"))
        name_width = min(60, max(len(r[0]) for r in rows))
        widths = [name_width] + [max(len(r[i]) for r in rows) for i in range(1, len(rows[0]))]
        for r in rows:
            name = r[0] if len(r[0]) <= name_width else "..." + r[0][-(name_width - 3):]
            cells = [name.ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
            lines.append("  ".join(cells))
        total_weights = self.indexed_elements + self.float_elements
        share = self.indexed_elements / total_weights if total_weights else 0.0
        halves, listed = "", 0
        for kind in self._weight_forms:
            found = [t for t in self.non_palette if t.stored_as == kind]
            if found:
                listed += sum(t.bytes for t in found)
                halves += (f", {sum(t.elements for t in found):,} as {kind} in "
                           f"{sum(t.bytes for t in found):,} bytes")
        # A file without a palette leaves out the palette's parts; "other constants": those
        # not counted before it.
        indexed = (f", {self.indexed_elements:,} palette-indexed ({share:.1%}) in "
                   f"{self.indexed_bytes:,} bytes") if self.palette is not None else ""
        palette = f"; palette {self.palette_bytes:,} bytes" if self.palette is not None else ""
        lines.append(
            f"totals: {total_weights:,} float weights{indexed}{halves}; other constants "
            f"{self.other_bytes - listed:,} bytes{palette}; graph+metadata "
            f"{self.overhead_bytes:,} bytes; file {self.file_bytes:,} bytes")
        if self.int8_weights:
            lines.append(f"int8 weights: {self.exact_channels}/{self.total_channels} channels "
                         "exact (code * power-of-two scale == Keras weight)")
            for w in self.int8_weights:
                lines.append(f"  {w.layer or w.tensor} ({w.op}): {w.exact_channels}/{w.channels}"
                             f" exact, {w.distinct_codes} distinct codes, {w.bytes:,} bytes")
            for i in self.inexact:
                where = "tensor" if i.channel < 0 else f"channel {i.channel}"
                lines.append(f"  not exact: {i.layer or i.tensor} {where} (max error "
                             f"{i.max_error:.3g}): {i.reason}")
        if self.non_palette:
            weight_file = self.format in ("float16", "int8_weight_only")
            lines.append("how each constant is stored:" if weight_file
                         else "not palette-indexed:")
            for t in self.non_palette:
                lines.append(f"  {t.name}: {t.reason}")
        return "\n".join(lines)


#: How a .wfn archive starts (`tfmot_wfn.archive.wfn_format.MAGIC`; that package sits above
#: this one, so it is not imported here).
ARCHIVE_PREFIX = b"\x89WFNARC"


def _file_bytes(path: Union[str, os.PathLike, bytes]) -> Tuple[bytes, str]:
    """``(the file's bytes, its path as shown)``; bytes given directly are shown as ``""``."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        return bytes(path), ""
    shown = os.fspath(path)
    if not os.path.isfile(shown):
        raise FileNotFoundError(f"no TFLite file at {shown!r}")
    with open(shown, "rb") as f:
        return f.read(), shown


def _reason(meta, recorded_reasons: Dict, s: int, i: int, raw_name: str, dtype: str,
            fallback: str = NO_METADATA_REASON) -> str:
    """Why constant ``i`` of subgraph ``s`` is not palette-indexed: as recorded (in the palette
    metadata, or for an int8 / float16 file in its own metadata), else generic."""
    recorded = recorded_reasons.get((s, i)) if meta is None else meta.reason(s, i, raw_name)
    if dtype == "FLOAT16":  # our weight files record every one (exact_weights.FLOAT16_REASON)
        return recorded or "float16 constant, left as stored"
    if dtype != "FLOAT32":
        return recorded or non_float_reason(dtype)
    if meta is None:
        return recorded or fallback
    return recorded or "not listed in the tfmot_wfn metadata"


def inspect(path: Union[str, os.PathLike, bytes]) -> TFLiteInspection:
    """Describe a TFLite file written by `export_tflite` (palette, int8 weight-only, float16,
    int8 or dense) or any other.

    Lists the palette, every constant tensor (stored dtype, element count, unique
    values, bytes), whole-file totals, and for each tensor that is not
    palette-indexed the reason recorded at export (in the ``tfmot_wfn`` metadata).
    For an int8 file (``format == "int8"``): each int8 weight's exact channels of
    all channels, its distinct codes and bytes, and the channels that are not exact
    with the reason and worst-case error (from the ``tfmot_wfn_int8`` metadata). For an
    int8 weight-only or float16 file (``format == "int8_weight_only"`` / ``"float16"``): how
    each weight is stored and why (from the ``tfmot_wfn_weights`` metadata).

    Raises:
      FileNotFoundError, ValueError (not a TFLite file, damaged metadata or indices).
    """
    data, shown = _file_bytes(path)
    if data.startswith(ARCHIVE_PREFIX):
        raise ValueError(f"{shown or 'these bytes'} is a .wfn archive, not a TFLite file: "
                         "describe it with tfmot_wfn.lite.read_archive(path) or "
                         "`tfmot-wfn inspect FILE`")
    model = fb.read_model(data)
    meta = read_metadata(model)
    int8 = read_int8_metadata(model)
    int8_reasons = int8_tensor_reasons(model, int8)
    weights = read_weights_metadata(model) if meta is None else None
    recorded_reasons = (dict(int8_reasons) if weights is None
                        else {**weights["reasons"], **int8_reasons})
    fallback = NO_METADATA_REASON if weights is None else "not read by any operator"
    tensors: List[TensorInfo] = []
    counted_buffers = set()
    palette: Optional[np.ndarray] = None
    palette_bytes = 0

    def count(buffer: int) -> int:
        if buffer in counted_buffers:
            return 0
        counted_buffers.add(buffer)
        return fb.buffer_bytes(model, buffer)

    for s, subgraph in enumerate(model.subgraphs):
        skip = set()
        decoded: Dict[int, int] = {}  # decoded tensor -> index tensor
        palette_index = (None if meta is None
                         else palette_tensor_index(subgraph, meta.palette_tensor))
        if palette_index is not None:
            skip.add(palette_index)
            values = fb.constant_array(model, subgraph.tensors[palette_index])
            if values is None:
                raise ValueError("damaged palette file: the palette tensor has no data")
            check_read_palette(values)
            if palette is None:
                palette = values.astype(np.float32)
                palette_bytes = count(subgraph.tensors[palette_index].buffer)
            for decoder in find_decoders(model, subgraph, palette_index):
                decoded[decoder.output_tensor] = decoder.index_tensor
                skip.add(decoder.index_tensor)
        for out, source in decoded.items():
            index_tensor = subgraph.tensors[source]
            indices = fb.constant_array(model, index_tensor)
            if indices is None:
                raise ValueError("damaged palette file: palette indices are not constant")
            name = display_name(fb.tensor_name(subgraph.tensors[out]), out)
            if indices.size and (indices.min() < 0 or indices.max() >= palette.size):
                raise ValueError(f"damaged palette file: an index of {name!r} is outside the "
                                 f"palette of {palette.size} values")
            tensors.append(TensorInfo(
                subgraph=s, name=name, shape=fb.tensor_shape(subgraph.tensors[out]),
                elements=int(indices.size), stored_as=fb.type_name(index_tensor.type).lower(),
                unique_values=int(np.unique(indices).size), bytes=count(index_tensor.buffer),
                palette_indexed=True, index=out))
        for i, tensor in enumerate(subgraph.tensors):
            if i in skip or not fb.is_constant(model, tensor):
                continue
            raw_name, shape = fb.tensor_name(tensor), fb.tensor_shape(tensor)
            values = fb.constant_array(model, tensor)
            dtype = fb.type_name(tensor.type)
            reason = _reason(meta, recorded_reasons, s, i, raw_name, dtype, fallback)
            tensors.append(TensorInfo(
                subgraph=s, name=display_name(raw_name, i), shape=shape,
                elements=int(np.prod(shape)) if shape else 1, stored_as=dtype.lower(),
                unique_values=(-1 if fb.numpy_dtype(tensor.type) is None
                               else int(np.unique(values).size)),
                bytes=count(tensor.buffer), palette_indexed=False, reason=reason, index=i))
    constant_bytes = sum(fb.buffer_bytes(model, b) for b in counted_buffers)
    return TFLiteInspection(
        path=shown, file_bytes=len(data),
        format=("palette" if meta is not None else "int8" if int8_reasons
                else weights["form"] if weights is not None else "dense"),
        format_version=None if meta is None else int(meta.version),
        producer=(meta.producer if meta is not None
                  else weights["producer"] if weights is not None else ""),
        palette=palette, palette_bytes=palette_bytes,
        index_dtype=None if meta is None else meta.index_dtype,
        tensors=tensors, constant_bytes=constant_bytes,
        int8_weights=[] if int8 is None else int8["weights"],
        inexact=[] if int8 is None else int8["inexact"])
