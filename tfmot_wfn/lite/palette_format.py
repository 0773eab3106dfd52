"""The palette TFLite format: names, index dtypes and the "tfmot_wfn" metadata entry.

A palette file is an ordinary TFLite flatbuffer in which

* one float32 tensor named ``tfmot_wfn/palette`` (K entries, the network's
  sorted palette) is shared by every layer (one tensor per subgraph, all
  pointing at the same buffer);
* each palette-indexed weight ``W`` is stored as a constant index tensor
  ``wfn_idx<n>`` (uint8 when K <= 256, int16 when K <= 32768) of W's shape,
  and decoded in the graph by ``CAST(indices -> int32)`` and
  ``GATHER(palette, positions, axis=0)`` right before the first op reading W;
* the metadata entry ``tfmot_wfn`` holds JSON describing the encoding and the
  reason every other constant tensor was left as it is;
* a BatchNorm after a conv/dense may be kept as ``MUL`` by its per-channel
  float32 scale ``tfmot_wfn/bn_scale/<name>`` (listed in ``batchnorm_scales``),
  so the conv's weight stays palette values (see `batchnorm_scale`).

```python
meta = PaletteMetadata(palette_size=29, index_dtype="uint8", indexed_count=5, not_indexed=[...])
set_metadata(model, METADATA_NAME, meta.to_json_bytes())
```
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Optional

import numpy as np

METADATA_NAME = "tfmot_wfn"
FORMAT_NAME = "tfmot_wfn.palette_tflite"
FORMAT_VERSION = 1
PALETTE_TENSOR_NAME = "tfmot_wfn/palette"
INDICES_PREFIX = "wfn_idx"    # + a number: the stored indices of one weight (short: file bytes)
POSITIONS_PREFIX = "wfn_pos"  # + a number: the same indices cast to int32 for GATHER
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


@dataclasses.dataclass
class PaletteMetadata:
    """The JSON stored in the ``tfmot_wfn`` metadata entry.

    ``indexed_count``: how many weights are palette-indexed (the graph says which).
    ``not_indexed``: ``{"subgraph", "tensor", "reason"}`` per float32 constant left as float.
    ``batchnorm_scales``: ``{"subgraph", "tensor", "layer", "batchnorm"}`` per BatchNorm
    kept as a ``MUL`` by the float32 constant ``tensor`` after ``layer``'s op (readers
    that ignore it still run the file correctly, only the decode fast path folds it).
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

    def to_json_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True,
                          separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes) -> "PaletteMetadata":
        """Parse the metadata; raises ValueError for other formats or newer versions."""
        try:
            raw = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"the {METADATA_NAME!r} metadata is not valid JSON: {e}") from e
        if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
            raise ValueError(f"the {METADATA_NAME!r} metadata is not a {FORMAT_NAME} description")
        if not isinstance(raw.get("version"), int) or raw["version"] > FORMAT_VERSION:
            raise ValueError(
                f"the file uses {FORMAT_NAME} version {raw.get('version')!r}; this tfmot_wfn "
                f"reads versions up to {FORMAT_VERSION} (upgrade tfmot_wfn)")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in fields})

    def reasons(self) -> Dict[tuple, str]:
        """``(subgraph, tensor name) -> reason`` for the tensors left as they are."""
        return {(int(e["subgraph"]), e["tensor"]): e["reason"] for e in self.not_indexed}

    def scale_tensors(self, subgraph: int) -> List[str]:
        """Names of the kept BatchNorm scale tensors of one subgraph."""
        return [str(e["tensor"]) for e in self.batchnorm_scales or []
                if int(e.get("subgraph", 0)) == subgraph]


def read_metadata(model) -> Optional[PaletteMetadata]:
    """The ``tfmot_wfn`` metadata of a ``ModelT``, or None when the file has none."""
    from tfmot_wfn.lite.tflite_flatbuffer import get_metadata

    data = get_metadata(model, METADATA_NAME)
    return None if data is None else PaletteMetadata.from_json_bytes(data)


@dataclasses.dataclass(frozen=True)
class IndexedTensor:
    """A weight stored as palette indices.

    ``unique_values``: how many palette entries it uses; ``index_bytes``: bytes of its indices.
    """

    subgraph: int
    name: str
    shape: tuple
    elements: int
    index_dtype: str
    unique_values: int
    index_bytes: int


@dataclasses.dataclass(frozen=True)
class NonPaletteTensor:
    """A constant tensor left as it is, and why (e.g. ``"bias of size 16 not in palette"``)."""

    subgraph: int
    name: str
    shape: tuple
    dtype: str
    elements: int
    bytes: int
    reason: str


@dataclasses.dataclass(frozen=True)
class Decoder:
    """One in-graph decode: ``output = GATHER(palette, CAST(indices))``, by position/index."""

    gather_op: int
    cast_op: Optional[int]
    index_tensor: int
    output_tensor: int


def palette_tensor_index(subgraph, name: str = PALETTE_TENSOR_NAME) -> Optional[int]:
    """Index of the palette tensor in a subgraph, or None."""
    from tfmot_wfn.lite.tflite_flatbuffer import tensor_name

    for i, t in enumerate(subgraph.tensors or []):
        if tensor_name(t) == name:
            return i
    return None


def find_decoders(model, subgraph, palette_index: int) -> List[Decoder]:
    """Every ``GATHER`` reading the palette tensor, with the ``CAST`` and indices feeding it.

    Raises ValueError when the positions do not come from a CAST of a constant.
    """
    from tfmot_wfn.lite import tflite_flatbuffer as fb

    gather, cast = fb.schema().BuiltinOperator.GATHER, fb.schema().BuiltinOperator.CAST
    producer = fb.producers(subgraph)
    found = []
    for pos, op in enumerate(subgraph.operators or []):
        opcode = model.operatorCodes[op.opcodeIndex]
        if opcode.customCode or fb.builtin_code(opcode) != gather:
            continue
        if int(op.inputs[0]) != palette_index:
            continue
        source, cast_pos = int(op.inputs[1]), producer.get(int(op.inputs[1]))
        if cast_pos is not None:
            cast_op = subgraph.operators[cast_pos]
            if fb.builtin_code(model.operatorCodes[cast_op.opcodeIndex]) != cast:
                raise ValueError("damaged palette file: palette positions are not made by CAST")
            source = int(cast_op.inputs[0])
        if not fb.is_constant(model, subgraph.tensors[source]):
            raise ValueError("damaged palette file: palette indices are not constant")
        found.append(Decoder(pos, cast_pos, source, int(op.outputs[0])))
    return found
