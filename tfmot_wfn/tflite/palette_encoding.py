"""Rewrite a float TFLite flatbuffer so its fixed weights index one shared palette.

The TFLite converter constant-folds ``gather(palette, indices)`` back into
float weights, so the palette is introduced after conversion, on the
flatbuffer: every constant float32 tensor whose values all lie in the palette
gets its data replaced by indices (uint8 / int16) and is produced in the graph
by ``CAST`` + ``GATHER`` from the one palette tensor, right before the first op
that reads it. The result runs as-is on any stock TFLite interpreter.

With ``compact=True`` (what `export_tflite` uses) the bytes no interpreter reads
go too (see `compaction`): the converter's long fused tensor names (only the
model's inputs/outputs, the palette and the weights ``label`` names keep one),
empty quantization tables, the converter's informational metadata, the decode
ops' default options; and its dynamic-batch reshape idiom becomes one RESHAPE.

```python
data, meta, indexed, others = encode_palette(float_tflite_bytes, tfmot_wfn.palette(model))
open("model_palette.tflite", "wb").write(data)
print(meta.index_dtype, [t.name for t in indexed], [(t.name, t.reason) for t in others])
```
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfmot_wfn.tflite import compaction
from tfmot_wfn.tflite import flatbuffer as fb
from tfmot_wfn.tflite.palette_format import (
    INDICES_PREFIX,
    METADATA_NAME,
    PALETTE_TENSOR_NAME,
    POSITIONS_PREFIX,
    IndexedTensor,
    NonPaletteTensor,
    PaletteMetadata,
    check_palette,
    display_name,
    index_dtype_for,
    non_float_reason,
)


@dataclasses.dataclass(frozen=True)
class ConstantTensor:
    """What an explainer is told about a constant tensor that is not palette-indexed.

    ``outside_palette``: how many of its values are not palette values (-1 when it
    is not a plain float32 tensor); ``consumers``: ``(op name, input slot)`` of the
    ops reading it; ``values``: its data (float32 tensors only).
    """

    subgraph: int
    index: int
    name: str
    shape: tuple
    dtype: str
    elements: int
    bytes: int
    outside_palette: int
    consumers: tuple
    values: Optional[np.ndarray] = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def is_bias(self) -> bool:
        return len(self.shape) == 1 and any(
            fb.BIAS_SLOTS.get(op) == slot for op, slot in self.consumers)


Explainer = Callable[[ConstantTensor], Optional[str]]


def generic_reason(t: ConstantTensor) -> str:
    """The reason a constant tensor is not palette-indexed, from the file alone.

    >>> generic_reason(ConstantTensor(0, 3, "b", (16,), "FLOAT32", 16, 64, 16, (("CONV_2D", 2),)))
    'bias of size 16 not in palette (16 of 16 values outside it)'
    """
    if t.dtype != "FLOAT32":
        return non_float_reason(t.dtype)
    if t.outside_palette < 0:
        return "quantized or sparse float tensor, left as stored"
    if t.outside_palette == 0:
        return "not read by any operator"
    outside = f"{t.outside_palette} of {t.elements} values outside it"
    if t.is_bias:
        return f"bias of size {t.elements} not in palette ({outside})"
    return f"not fixed: values not in the palette ({outside})"


def _palette_positions(values: np.ndarray, pal: np.ndarray) -> Tuple[np.ndarray, int]:
    """Positions of ``values`` in the sorted ``pal`` and how many values are not in it."""
    flat = values.ravel()
    pos = np.minimum(np.searchsorted(pal, flat), pal.size - 1)
    inside = pal[pos] == flat
    return pos, int(flat.size - np.count_nonzero(inside))


Labeler = Callable[[ConstantTensor], Optional[str]]


def _checked_index_dtype(index_dtype: Optional[str], palette_size: int) -> str:
    """``index_dtype``, or the smallest that holds the palette when None; checked."""
    smallest = index_dtype_for(palette_size)
    if index_dtype is None:
        return smallest
    if index_dtype not in ("uint8", "int16"):
        raise ValueError(f"index_dtype must be 'uint8', 'int16' or None, got {index_dtype!r}")
    if index_dtype == "uint8" and smallest != "uint8":
        raise ValueError(f"a palette of {palette_size} values needs int16 indices, not uint8")
    return index_dtype


class _PaletteEncoder:
    """Replaces the all-palette constants of one model, subgraph by subgraph, and keeps records.

    ``indexed`` / ``not_indexed``: the tensor records `encode_palette` returns;
    ``labels``: ``(subgraph, tensor) -> short name`` for ``compact``;
    ``scale_entries``: the metadata entries of the BatchNorm scales kept as MULs.
    """

    def __init__(self, model, pal: np.ndarray, index_dtype: str, compact: bool,
                 explain: Optional[Explainer], label: Optional[Labeler]):
        self.model, self.pal, self.index_dtype, self.compact = model, pal, index_dtype, compact
        self.explain, self.label = explain, label
        self.index_type = fb.type_value(index_dtype.upper())
        self.empty_buffer = fb.empty_buffer(model)
        self.palette_buffer = fb.add_buffer(model, pal.astype("<f4").tobytes())
        self.index_buffers: Dict[int, int] = {}  # original buffer -> its index buffer
        self.replaced_buffers = set()
        self.indexed: List[IndexedTensor] = []
        self.not_indexed: List[NonPaletteTensor] = []
        self.labels: Dict[Tuple[int, int], str] = {}
        self.scale_entries: List[Dict] = []
        self._expected_scales: Dict[Tuple[int, str], object] = {}
        self._readers: Dict[int, List] = {}  # of the subgraph being encoded
        self._palette_tensor: Optional[int] = None  # its palette tensor, once one is indexed

    def expect_scales(self, batchnorm_scales: Sequence) -> None:
        """The kept BatchNorm scales (`KeptScale` or metadata dicts), looked up by tensor name."""
        for k in batchnorm_scales:
            if isinstance(k, dict):
                self._expected_scales[(int(k["subgraph"]), k["tensor"])] = k
            else:
                self._expected_scales[(k.subgraph, k.scale)] = k

    def encode_subgraph(self, s: int, subgraph) -> None:
        """Index every all-palette constant of ``subgraph`` read by an op; record the others."""
        self._readers = fb.consumers(subgraph)
        self._palette_tensor = None
        inserts: Dict[int, List] = {}
        for i in range(len(subgraph.tensors)):  # the tensors added on the way are not visited
            tensor = subgraph.tensors[i]
            if not fb.is_constant(self.model, tensor):
                continue
            record, positions = self._describe(s, subgraph, i)
            self._note_label(record)
            self._note_kept_scale(s, record.name, i)
            if record.outside_palette == 0 and record.consumers:
                first_reader = min(p for p, _ in self._readers[i])
                inserts.setdefault(first_reader, []).extend(
                    self._index(subgraph, record, positions))
            else:
                self._leave(record)
        fb.insert_before(subgraph, inserts)

    def finish(self) -> None:
        """Check every kept scale was found; empty the buffers no tensor reads any more."""
        if self._expected_scales:
            missing = ", ".join(repr(name) for _, name in self._expected_scales)
            raise ValueError(f"batchnorm_scales name tensors the file does not hold: {missing}")
        still_used = fb.referenced_buffers(self.model)
        for b in self.replaced_buffers - still_used:
            self.model.buffers[b].data = None

    def rename_as_written(self, index_of: Dict[Tuple[int, str], int]) -> None:
        """After compaction: the records and kept scales name tensors as the file now does.

        ``index_of``: ``(subgraph, name before compaction) -> tensor index``.
        """
        shown = {(s, i): display_name(fb.tensor_name(t), i)
                 for s, i, t in fb.iter_tensors(self.model)}

        def renamed(s: int, name: str) -> str:
            return shown.get((s, index_of.get((s, name), -1)), name) if name else name

        self.indexed = [dataclasses.replace(t, name=shown[(t.subgraph, t.index)])
                        for t in self.indexed]
        self.not_indexed = [dataclasses.replace(t, name=shown[(t.subgraph, t.index)])
                            for t in self.not_indexed]
        for entry in self.scale_entries:
            s = int(entry["subgraph"])
            entry["tensor"] = shown[(s, int(entry["index"]))]
            for key in ("weight", "bias"):
                if key in entry:
                    entry[key] = renamed(s, entry[key])

    def _describe(self, s: int, subgraph, i: int) -> Tuple[ConstantTensor, Optional[np.ndarray]]:
        """The record of constant ``i`` and, for a plain float32 one, its palette positions."""
        tensor = subgraph.tensors[i]
        shape = fb.tensor_shape(tensor)
        reads = tuple((fb.op_name(self.model, subgraph.operators[p]), slot)
                      for p, slot in self._readers.get(i, []))
        values, outside, positions = None, -1, None
        if fb.is_plain_float_constant(self.model, tensor):
            values = fb.constant_array(self.model, tensor)
            positions, outside = _palette_positions(values, self.pal)
        record = ConstantTensor(
            subgraph=s, index=i, name=fb.tensor_name(tensor), shape=shape,
            dtype=fb.type_name(tensor.type), elements=int(np.prod(shape)) if shape else 1,
            bytes=fb.buffer_bytes(self.model, tensor.buffer), outside_palette=outside,
            consumers=reads, values=values)
        return record, positions

    def _note_label(self, record: ConstantTensor) -> None:
        if self.compact and self.label is not None and record.values is not None:
            new_name = self.label(record)
            if new_name:
                self.labels[(record.subgraph, record.index)] = new_name

    def _note_kept_scale(self, s: int, name: str, i: int) -> None:
        k = self._expected_scales.pop((s, name), None)
        if k is not None:
            entry = dict(k) if isinstance(k, dict) else dict(
                k.to_metadata(), weight=k.weight, bias=k.bias)
            entry.update(subgraph=s, index=i)
            self.scale_entries.append(entry)

    def _index(self, subgraph, record: ConstantTensor, positions: np.ndarray) -> List:
        """Store ``record``'s tensor as indices; returns the CAST + GATHER that decode it."""
        tensor = subgraph.tensors[record.index]
        if self._palette_tensor is None:
            self._palette_tensor = fb.add_tensor(subgraph, PALETTE_TENSOR_NAME, [self.pal.size],
                                                 fb.type_value("FLOAT32"), self.palette_buffer)
        dtype = np.dtype(self.index_dtype)
        if tensor.buffer not in self.index_buffers:
            self.index_buffers[tensor.buffer] = fb.add_buffer(
                self.model, positions.astype(dtype.newbyteorder("<")).tobytes())
        number = len(self.indexed)
        index_tensor = fb.add_tensor(
            subgraph, "" if self.compact else f"{INDICES_PREFIX}{number}", record.shape,
            self.index_type, self.index_buffers[tensor.buffer])
        self.replaced_buffers.add(tensor.buffer)
        tensor.buffer = self.empty_buffer
        ops = self._decode_ops(subgraph, index_tensor, record.index, record.shape, number)
        self.indexed.append(IndexedTensor(
            subgraph=record.subgraph, name=record.name, shape=record.shape,
            elements=int(record.values.size), index_dtype=self.index_dtype,
            unique_values=int(np.unique(positions).size),
            index_bytes=int(record.values.size * dtype.itemsize), index=record.index))
        return ops

    def _decode_ops(self, subgraph, index_tensor: int, output_tensor: int, shape,
                    number: int) -> List:
        """``output = GATHER(palette, CAST(indices, int32))``."""
        mod, model = fb.schema(), self.model
        positions = fb.add_tensor(subgraph, "" if self.compact else f"{POSITIONS_PREFIX}{number}",
                                  shape, mod.TensorType.INT32)
        cast = mod.OperatorT()
        cast.opcodeIndex = fb.opcode_index(model, mod.BuiltinOperator.CAST)
        cast.inputs = np.asarray([index_tensor], np.int32)
        cast.outputs = np.asarray([positions], np.int32)
        gather = mod.OperatorT()
        gather.opcodeIndex = fb.opcode_index(model, mod.BuiltinOperator.GATHER)
        gather.inputs = np.asarray([self._palette_tensor, positions], np.int32)
        gather.outputs = np.asarray([output_tensor], np.int32)
        if not self.compact:  # the kernels read the types from the tensors and default to axis 0
            cast.builtinOptionsType = mod.BuiltinOptions.CastOptions
            cast.builtinOptions = mod.CastOptionsT()
            cast.builtinOptions.inDataType = subgraph.tensors[index_tensor].type
            cast.builtinOptions.outDataType = mod.TensorType.INT32
            gather.builtinOptionsType = mod.BuiltinOptions.GatherOptions
            gather.builtinOptions = mod.GatherOptionsT()
            gather.builtinOptions.axis, gather.builtinOptions.batchDims = 0, 0
        return [cast, gather]

    def _leave(self, record: ConstantTensor) -> None:
        """Record a constant left as it is, with the explainer's reason (else the generic one)."""
        reason = (self.explain(record) if self.explain is not None else None) \
            or generic_reason(record)
        self.not_indexed.append(NonPaletteTensor(
            subgraph=record.subgraph, name=record.name, shape=record.shape, dtype=record.dtype,
            elements=record.elements, bytes=record.bytes, reason=reason, index=record.index))


def encode_palette(
    tflite: bytes,
    palette,
    explain: Optional[Explainer] = None,
    producer: str = "",
    index_dtype: Optional[str] = None,
    batchnorm_scales: Sequence = (),
    compact: bool = False,
    label: Optional[Labeler] = None,
) -> Tuple[bytes, PaletteMetadata, List[IndexedTensor], List[NonPaletteTensor]]:
    """Store every all-palette float32 constant of ``tflite`` as indices into ``palette``.

    Args:
      tflite: the bytes of a float TFLite model (e.g. from the converter).
      palette: the network palette (any order; made sorted and unique).
      explain: called for each constant left as it is; returns the reason, or None
        to use `generic_reason`.
      producer: a free text stored in the metadata (e.g. the tfmot_wfn version).
      index_dtype: ``"uint8"`` or ``"int16"``; None (default) picks the smallest that
        holds the palette (uint8 for K <= 256).
      batchnorm_scales: the `scale_ops.KeptScale` records (or their metadata
        dicts) of BatchNorms kept as a MUL, stored in the metadata for the decoder.
      compact: drop what costs bytes and no interpreter reads (see `compaction`):
        every tensor name but the model's inputs/outputs (and signature tensors), the
        palette's and those ``label`` gives; empty quantization tables, ``has_rank``
        of ranked tensors and inner ``shape_signature``s; the decode ops' default
        options; the converter's ``min_runtime_version`` / ``CONVERSION_METADATA``
        entries and description; per-tensor empty buffers and the 16-byte alignment
        of non-float buffers; and rewrite the converter's dynamic-batch reshape idiom
        into one RESHAPE. Every output is the same, for every batch size.
      label: with ``compact``, called for each float32 constant (indexed or not);
        returns its new, short name (e.g. ``"conv1/kernel"``) or None to leave it
        unnamed (shown as ``t<index>`` by `inspect`).

    Returns:
      ``(bytes, metadata, indexed tensors, non-palette tensors)``; the records carry
      each tensor's index in its subgraph and its name in the written file.

    Raises:
      ValueError: not a TFLite file, a bad palette (empty, NaN, > 32768 values), or
        a file that is already palette-encoded.
    """
    model = fb.read_model(tflite)
    if fb.get_metadata(model, METADATA_NAME) is not None:
        raise ValueError("the TFLite file is already palette-encoded (it has tfmot_wfn metadata)")
    pal = check_palette(palette)
    if compact:
        compaction.compact_graph(model)
    encoder = _PaletteEncoder(model, pal, _checked_index_dtype(index_dtype, pal.size),
                              compact=compact, explain=explain, label=label)
    encoder.expect_scales(batchnorm_scales)
    index_of = {(s, fb.tensor_name(t)): i for s, i, t in fb.iter_tensors(model)}
    for s, subgraph in enumerate(model.subgraphs):
        encoder.encode_subgraph(s, subgraph)
    encoder.finish()
    if compact:
        compaction.compact_tables(model, encoder.labels, keep=(PALETTE_TENSOR_NAME,))
        encoder.rename_as_written(index_of)
    metadata = PaletteMetadata(
        palette_size=int(pal.size), index_dtype=encoder.index_dtype,
        indexed_count=len(encoder.indexed),
        # Non-float constants (shapes, axes) get their generic reason back from `inspect`.
        not_indexed=[{"subgraph": t.subgraph, "index": t.index, "tensor": t.name,
                      "reason": t.reason} for t in encoder.not_indexed if t.dtype == "FLOAT32"],
        producer=producer, batchnorm_scales=encoder.scale_entries)
    fb.set_metadata(model, METADATA_NAME, metadata.to_bytes())
    return (fb.write_model(model, small_alignment=compact), metadata, encoder.indexed,
            encoder.not_indexed)
