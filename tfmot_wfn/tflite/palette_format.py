"""The palette TFLite format: names, index dtypes and the "tfmot_wfn" metadata entry.

A palette file is an ordinary TFLite flatbuffer in which

* one float32 tensor named ``tfmot_wfn/palette`` (K entries, the network's
  sorted palette) is shared by every layer (one tensor per subgraph, all
  pointing at the same buffer);
* each palette-indexed weight ``W`` is stored as a constant index tensor
  (uint8 when K <= 256, int16 when K <= 32768) of W's shape, and decoded in the
  graph by ``CAST(indices -> int32)`` and ``GATHER(palette, positions, axis=0)``
  right before the first op reading W (readers find decoders by that structure,
  not by name);
* the metadata entry ``tfmot_wfn`` describes the encoding and the reason every
  other float constant was left as it is, referring to tensors by index:
  ``METADATA_MAGIC``, a version byte (2) and zlib-compressed JSON with short keys
  (version 1, plain JSON keyed by tensor names, is still read);
* a BatchNorm after a conv/dense may be kept as ``MUL`` by its per-channel
  float32 scale (listed in ``batchnorm_scales``), so the conv's weight stays
  palette values (see `batchnorm_scale`).

A compact file (the default of `export_tflite`) names only the model's inputs and
outputs, the palette and the weights (after the Keras weight each holds, e.g.
``conv1/kernel``, ``bn1/scale``); `display_name` shows the others as ``t<index>``.
With ``compact=False`` the converter's names are kept, the index tensors are named
``wfn_idx<n>`` and their int32 positions ``wfn_pos<n>``.

```python
meta = PaletteMetadata(palette_size=29, index_dtype="uint8", indexed_count=5, not_indexed=[...])
set_metadata(model, METADATA_NAME, meta.to_bytes())
PaletteMetadata.from_bytes(get_metadata(model, METADATA_NAME)).reason(0, 12, "conv1/bias")
```
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from typing import Dict, List, Optional

import numpy as np

METADATA_NAME = "tfmot_wfn"
FORMAT_NAME = "tfmot_wfn.palette_tflite"
FORMAT_VERSION = 2  # 1: plain JSON keyed by tensor names; 2: compressed, by tensor index
METADATA_MAGIC = b"WFN"  # version >= 2: these bytes, one version byte, zlib(JSON)
# The preset zlib dictionary of version 2: phrases of the reasons `tfmot_wfn` records, so
# each costs a few bytes. Part of the format: NEVER edit it (a new one needs a new
# version; zlib checks its Adler-32 when reading).
_ZDICT_V2 = (
    b"no weight of the Keras model has these values (a graph constant such as an epsilon, or "
    b"a weight the converter transformed):  values are not in the palette (apply "
    b"tfmot_wfn.lite.fold_batchnorm to the float model before fix_weights)not fixed: weight "
    b"' of layer ' values outside it) by the converter folded into ': values are not in the "
    b"palette scale gamma/sqrt(var+eps): moving statistics are not fixed weights' shift "
    b"folded into 'BatchNorm scale kept as a separate MUL (float, per channel)' shift divided "
    b"by its scale (kept as a separate MUL after '"
    b'{"k":,"d":"uint8","n":,"p":"tfmot_wfn 0.1.0","r":[[0,"bias of size  not in palette: '
    b'BatchNorm \'"],"b":[[0,')
PALETTE_TENSOR_NAME = "tfmot_wfn/palette"
INDICES_PREFIX = "wfn_idx"    # + a number: the stored indices of one weight (short: file bytes)
POSITIONS_PREFIX = "wfn_pos"  # + a number: the same indices cast to int32 for GATHER
UNNAMED_PREFIX = "t"  # + the tensor index: how an unnamed tensor of a compact file is shown
MAX_PALETTE_SIZE = 32768  # int16 indices, GATHER needs non-negative positions


def non_float_reason(dtype: str) -> str:
    """The reason a non-float constant is not palette-indexed.

    >>> non_float_reason("INT32")
    'int32 constant (shapes, axes or indices), not a weight'
    """
    return f"{dtype.lower()} constant (shapes, axes or indices), not a weight"


def index_dtype_for(palette_size: int) -> str:
    """``"uint8"`` for K <= 256, ``"int16"`` for K <= 32768.

    >>> index_dtype_for(29), index_dtype_for(300)
    ('uint8', 'int16')
    """
    if palette_size < 1:
        raise ValueError("the palette is empty: the model has no fixed weights to index")
    if palette_size <= 256:
        return "uint8"
    if palette_size <= MAX_PALETTE_SIZE:
        return "int16"
    raise ValueError(
        f"the palette has {palette_size} values, more than the {MAX_PALETTE_SIZE} int16 indices "
        "can address; the model does not look fixed (fix it with tfmot_wfn.fix_weights, or pass a "
        "model made by fix_weights so only fixed weights form the palette, or export mode='dense')")


def check_palette(palette) -> np.ndarray:
    """The palette as a sorted, unique, finite float32 vector; raises ValueError otherwise."""
    pal = np.asarray(palette, dtype=np.float32).ravel()
    if pal.size == 0:
        raise ValueError("the palette is empty: the model has no fixed weights to index")
    if not np.all(np.isfinite(pal)):
        raise ValueError("the palette holds NaN or Inf values")
    pal = np.unique(pal)  # sorted; -0.0 and 0.0 merge
    index_dtype_for(pal.size)
    return pal


def check_read_palette(values: np.ndarray) -> np.ndarray:
    """A palette read from a file: finite and strictly increasing as written, or ValueError."""
    if not np.all(np.isfinite(values)) or np.any(np.diff(values) <= 0):
        raise ValueError("damaged palette file: the palette is not a sorted vector of distinct "
                         "finite values, as written")
    return values


def _check_version(version) -> int:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"the {METADATA_NAME!r} metadata has no valid {FORMAT_NAME} version "
                         f"({version!r})")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"the file uses {FORMAT_NAME} version {version!r}; this tfmot_wfn reads versions up "
            f"to {FORMAT_VERSION} (upgrade tfmot_wfn)")
    return version


def _entry_index(entry: Dict) -> int:
    index = entry.get("index", -1)
    return int(index) if isinstance(index, int) and not isinstance(index, bool) else -1


@dataclasses.dataclass
class PaletteMetadata:
    """What the ``tfmot_wfn`` metadata entry describes.

    ``indexed_count``: how many weights are palette-indexed (the graph says which).
    ``not_indexed``: ``{"subgraph", "index", "tensor", "reason"}`` per float32 constant left
    as float (``index``: its position in the subgraph's tensors; version 1 files name the
    tensor instead and have ``index`` -1).
    ``batchnorm_scales``: ``{"subgraph", "index", "tensor", "layer", "batchnorm"}`` per
    BatchNorm kept as a ``MUL`` by the float32 constant ``index`` after ``layer``'s op
    (readers that ignore it still run the file correctly, only the decode fast path folds it).

    Version 2 (written now) stores ``METADATA_MAGIC``, one version byte and the
    zlib-compressed JSON with short keys (`to_bytes`); version 1 stored plain JSON with
    the fields above keyed by tensor name. `from_bytes` reads both.
    """

    palette_size: int
    index_dtype: str
    indexed_count: int
    not_indexed: List[Dict]
    mode: str = "palette"
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION
    palette_tensor: str = PALETTE_TENSOR_NAME
    producer: str = ""
    batchnorm_scales: List[Dict] = dataclasses.field(default_factory=list)

    # ------------------------------------------------------------ serialization
    def to_bytes(self) -> bytes:
        """The version 2 encoding: magic, version byte, zlib(compact JSON, short keys)."""
        short: Dict = {"k": int(self.palette_size), "d": self.index_dtype,
                       "n": int(self.indexed_count)}
        if self.producer:
            short["p"] = self.producer
        if self.mode != "palette":
            short["m"] = self.mode
        if self.palette_tensor != PALETTE_TENSOR_NAME:
            short["t"] = self.palette_tensor
        if self.not_indexed:
            short["r"] = [[int(e.get("subgraph", 0)), _entry_index(e), str(e["reason"])]
                          for e in self.not_indexed]
        if self.batchnorm_scales:
            short["b"] = [[int(e.get("subgraph", 0)), _entry_index(e), str(e["layer"]),
                           str(e["batchnorm"])] for e in self.batchnorm_scales]
        if any(_entry_index(e) < 0 for e in self.not_indexed + list(self.batchnorm_scales)):
            raise ValueError("version 2 metadata refers to tensors by index; an entry has none")
        text = json.dumps(short, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        packer = zlib.compressobj(9, zdict=_ZDICT_V2)
        return METADATA_MAGIC + bytes([FORMAT_VERSION]) + packer.compress(text) + packer.flush()

    @classmethod
    def from_bytes(cls, data: bytes) -> "PaletteMetadata":
        """Parse version 2 (compressed) or version 1 (JSON) metadata.

        Raises ValueError for other formats, damaged data or newer versions.
        """
        data = bytes(data)
        if data.startswith(METADATA_MAGIC):
            return cls._from_v2(data)
        return cls._from_v1(data)

    from_json_bytes = from_bytes  # the name used by version 1

    @classmethod
    def _from_v2(cls, data: bytes) -> "PaletteMetadata":
        if len(data) < len(METADATA_MAGIC) + 1:
            raise ValueError(f"the {METADATA_NAME!r} metadata is truncated")
        version = _check_version(data[len(METADATA_MAGIC)])
        if version < 2:
            raise ValueError(f"the {METADATA_NAME!r} metadata is damaged: version {version} "
                             "in a compressed entry")
        try:
            unpacker = zlib.decompressobj(zdict=_ZDICT_V2)
            text = unpacker.decompress(data[len(METADATA_MAGIC) + 1:]) + unpacker.flush()
            if not unpacker.eof:
                raise zlib.error("the compressed stream is truncated")
            raw = json.loads(text.decode("utf-8"))
        except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"the {METADATA_NAME!r} metadata is damaged: {e}") from e
        try:
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            not_indexed = [{"subgraph": int(s), "index": int(i), "tensor": "", "reason": str(r)}
                           for s, i, r in raw.get("r", [])]
            scales = [{"subgraph": int(s), "index": int(i), "tensor": "", "layer": str(layer),
                       "batchnorm": str(bn)} for s, i, layer, bn in raw.get("b", [])]
            return cls(palette_size=int(raw["k"]), index_dtype=str(raw["d"]),
                       indexed_count=int(raw["n"]), not_indexed=not_indexed,
                       mode=str(raw.get("m", "palette")), version=version,
                       palette_tensor=str(raw.get("t", PALETTE_TENSOR_NAME)),
                       producer=str(raw.get("p", "")), batchnorm_scales=scales)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"the {METADATA_NAME!r} metadata is damaged: {e!r}") from e

    @classmethod
    def _from_v1(cls, data: bytes) -> "PaletteMetadata":
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"the {METADATA_NAME!r} metadata is not valid JSON: {e}") from e
        if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
            raise ValueError(f"the {METADATA_NAME!r} metadata is not a {FORMAT_NAME} description")
        _check_version(raw.get("version"))
        fields = {f.name for f in dataclasses.fields(cls)}
        meta = cls(**{k: v for k, v in raw.items() if k in fields})
        meta.not_indexed = [dict(e, index=-1) for e in meta.not_indexed or []]
        meta.batchnorm_scales = [dict(e, index=-1) for e in meta.batchnorm_scales or []]
        return meta

    # ----------------------------------------------------------------- lookups
    def reason(self, subgraph: int, index: int, name: str) -> Optional[str]:
        """The recorded reason tensor ``index`` (named ``name``) of a subgraph is not indexed."""
        for e in self.not_indexed:
            if int(e.get("subgraph", 0)) != subgraph:
                continue
            i = _entry_index(e)
            if (i >= 0 and i == index) or (i < 0 and e.get("tensor") == name):
                return str(e["reason"])
        return None

    def scale_indices(self, subgraph_index: int, subgraph) -> List[int]:
        """Tensor indices of the kept BatchNorm scales of one subgraph (a ``SubGraphT``)."""
        from tfmot_wfn.tflite.flatbuffer import tensor_name

        found = []
        names = {tensor_name(t): i for i, t in enumerate(subgraph.tensors or [])}
        count = len(subgraph.tensors or [])
        for e in self.batchnorm_scales or []:
            if int(e.get("subgraph", 0)) != subgraph_index:
                continue
            i = _entry_index(e)
            if i < 0:
                i = names.get(str(e.get("tensor")), -1)
            if 0 <= i < count:
                found.append(i)
        return found


def read_metadata(model) -> Optional[PaletteMetadata]:
    """The ``tfmot_wfn`` metadata of a ``ModelT``, or None when the file has none."""
    from tfmot_wfn.tflite.flatbuffer import get_metadata

    data = get_metadata(model, METADATA_NAME)
    return None if data is None else PaletteMetadata.from_bytes(data)


@dataclasses.dataclass(frozen=True)
class IndexedTensor:
    """A weight stored as palette indices.

    ``name``: the decoded tensor's name (see `display_name`); ``index``: its position in
    the subgraph's tensors; ``unique_values``: how many palette entries it uses;
    ``index_bytes``: bytes of its indices.
    """

    subgraph: int
    name: str
    shape: tuple
    elements: int
    index_dtype: str
    unique_values: int
    index_bytes: int
    index: int = -1


@dataclasses.dataclass(frozen=True)
class NonPaletteTensor:
    """A constant tensor left as it is, and why (e.g. ``"bias of size 16 not in palette"``).

    ``name``: see `display_name`; ``index``: its position in the subgraph's tensors.
    """

    subgraph: int
    name: str
    shape: tuple
    dtype: str
    elements: int
    bytes: int
    reason: str
    index: int = -1


@dataclasses.dataclass(frozen=True)
class Decoder:
    """One in-graph decode: ``output = GATHER(palette, CAST(indices))``, by position/index."""

    gather_op: int
    cast_op: Optional[int]
    index_tensor: int
    output_tensor: int


def display_name(name: str, index: int) -> str:
    """The name shown for a tensor: its own, or ``t<index>`` when a compact file left it unnamed.

    >>> display_name("conv1/kernel", 3), display_name("", 17)
    ('conv1/kernel', 't17')
    """
    return name if name else f"{UNNAMED_PREFIX}{index}"


def palette_tensor_index(subgraph, name: str = PALETTE_TENSOR_NAME) -> Optional[int]:
    """Index of the palette tensor in a subgraph, or None."""
    from tfmot_wfn.tflite.flatbuffer import tensor_name

    for i, t in enumerate(subgraph.tensors or []):
        if tensor_name(t) == name:
            return i
    return None


def find_decoders(model, subgraph, palette_index: int) -> List[Decoder]:
    """Every ``GATHER`` reading the palette tensor, with the ``CAST`` and indices feeding it.

    Raises ValueError when the positions do not come from a CAST of a constant.
    """
    from tfmot_wfn.tflite import flatbuffer as fb

    gather, cast = fb.schema().BuiltinOperator.GATHER, fb.schema().BuiltinOperator.CAST
    producer = fb.producers(subgraph)
    found = []
    for pos, op in enumerate(subgraph.operators or []):
        opcode = model.operatorCodes[op.opcodeIndex]
        if opcode.customCode or fb.builtin_code(opcode) != gather:
            continue
        if op.inputs is None or len(op.inputs) != 2 or op.outputs is None or len(op.outputs) != 1:
            raise ValueError(f"damaged TFLite file: GATHER operator {pos} does not have two "
                             "inputs and one output")
        if int(op.inputs[0]) != palette_index:
            continue
        source, cast_pos = int(op.inputs[1]), producer.get(int(op.inputs[1]))
        if cast_pos is not None:
            cast_op = subgraph.operators[cast_pos]
            if (fb.builtin_code(model.operatorCodes[cast_op.opcodeIndex]) != cast
                    or cast_op.inputs is None or len(cast_op.inputs) != 1):
                raise ValueError("damaged palette file: palette positions are not made by CAST")
            source = int(cast_op.inputs[0])
        if not fb.is_constant(model, subgraph.tensors[source]):
            raise ValueError("damaged palette file: palette indices are not constant")
        found.append(Decoder(pos, cast_pos, source, int(op.outputs[0])))
    return found
