"""Byte-saving rewrites of a TFLite flatbuffer that change nothing an interpreter computes.

Used by the compact exports (`encode_palette(..., compact=True)`,
`encode_exact_weights(..., compact=True)`). On the
demo CNN the converter's float file spends ~3.4 KB on its graph; a palette file adds
decode ops, so these matter once the weights are 4x smaller:

* `drop_converter_metadata`: ``min_runtime_version`` and ``CONVERSION_METADATA``
  (informational, and the first is stale once ops are added) and the description;
* `drop_empty_quantization`: the converter writes an empty quantization table per
  tensor; the interpreter treats a missing one the same (no quantization);
* `drop_redundant_has_rank`: ``has_rank`` only tells a scalar from an unranked tensor;
  it is kept on tensors of rank 0;
* `drop_inner_shape_signatures`: ``shape_signature`` (the -1 of a dynamic batch) is
  kept on the model's inputs and outputs, where the interpreter reads it; inner
  tensors are re-shaped from the inputs whenever they are resized;
* `simplify_dynamic_reshapes`: the converter's dynamic-batch reshape idiom
  ``RESHAPE(x, PACK(STRIDED_SLICE(SHAPE(x), [0], [1], [1]), c1, c2...))`` (Keras
  ``Flatten``/``Reshape``) becomes ``RESHAPE(x, [-1, c1, c2...])``: the same output
  for every batch size, three ops and six tensors fewer;
* `drop_unused_tensors`: tensors no op, input/output or signature uses;
* `drop_unused_buffers`: every data-less tensor points at the empty buffer 0 (the
  converter gives each activation its own empty buffer) and unused buffers go;
* `rename_tensors`: every tensor name but the public ones goes; the caller's short
  labels (``conv1/kernel``) name the weights.

`compact_graph` runs the rewrites that renumber tensors (before an encoder records
indices), `compact_tables` all the others (after it).

Each returns what it removed; tensor indices change only in `drop_unused_tensors`,
which returns the renumbering.

```python
model = fb.read_model(data)
drop_converter_metadata(model); drop_empty_quantization(model)
renumbered = drop_unused_tensors(model)     # {(subgraph, old index): new index}
data = fb.write_model(model)
```
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfmot_wfn.tflite import flatbuffer as fb

# Metadata entries the converter writes for tools, not read by any interpreter.
CONVERTER_METADATA = ("min_runtime_version", "CONVERSION_METADATA")


def drop_converter_metadata(model) -> int:
    """Remove the converter's informational metadata and description; returns bytes freed."""
    freed = 0
    for name in CONVERTER_METADATA:
        data = fb.get_metadata(model, name)
        if data is not None and fb.remove_metadata(model, name):
            freed += len(data)
    if model.metadata is not None and not model.metadata:
        model.metadata = None
    if model.description:
        freed += len(model.description)
        model.description = None
    return freed


def _empty(values) -> bool:
    return values is None or len(values) == 0


def drop_empty_quantization(model) -> int:
    """Remove quantization tables that hold no parameters; returns how many were removed.

    Quantized tensors (a scale, zero point, min/max or custom details) keep theirs.
    """
    removed = 0
    for _, _, tensor in fb.iter_tensors(model):
        q = tensor.quantization
        if q is None:
            continue
        if (_empty(q.scale) and _empty(q.zeroPoint) and _empty(q.min) and _empty(q.max)
                and q.details is None):
            tensor.quantization = None
            removed += 1
    return removed


def drop_redundant_has_rank(model) -> int:
    """Clear ``has_rank`` on tensors with a non-empty shape (their rank is the shape's)."""
    cleared = 0
    for _, _, tensor in fb.iter_tensors(model):
        if tensor.hasRank and tensor.shape is not None and len(tensor.shape) > 0:
            tensor.hasRank = False
            cleared += 1
    return cleared


def drop_inner_shape_signatures(model) -> int:
    """Remove ``shape_signature`` from tensors that are not inputs/outputs of the model.

    The interpreter re-derives every inner shape from the inputs' when they are resized;
    only the inputs' and outputs' signatures (which mark the dynamic batch) are read.
    """
    removed = 0
    for s, subgraph in enumerate(model.subgraphs or []):
        public = public_tensors(model, s, subgraph)
        for i, tensor in enumerate(subgraph.tensors or []):
            if i not in public and tensor.shapeSignature is not None:
                tensor.shapeSignature = None
                removed += 1
    return removed


# ------------------------------------------------------------ dynamic reshapes
def _only_reader(readers, tensor: int, outputs: set) -> Optional[Tuple[int, int]]:
    found = readers.get(tensor, [])
    if len(found) != 1 or tensor in outputs:
        return None
    return found[0]


def _const_ints(model, subgraph, index: int) -> Optional[np.ndarray]:
    if index < 0:
        return None
    tensor = subgraph.tensors[index]
    if tensor.type not in (fb.type_value("INT32"), fb.type_value("INT64")):
        return None
    values = fb.constant_array(model, tensor)
    return None if values is None else values.astype(np.int64)


def _is_op(model, op, name: str) -> bool:
    return fb.op_name(model, op) == name


def _is_batch_slice(model, subgraph, op) -> bool:
    """``STRIDED_SLICE(shape, [0], [1], [1])`` keeping only dimension 0, as a scalar."""
    opts = op.builtinOptions
    if opts is None or len(op.inputs) != 4:
        return False
    begin, end, strides = (_const_ints(model, subgraph, int(t)) for t in op.inputs[1:])
    if begin is None or end is None or strides is None:
        return False
    masks = (opts.beginMask, opts.endMask, opts.ellipsisMask, opts.newAxisMask)
    return (list(begin.ravel()) == [0] and list(end.ravel()) == [1]
            and list(strides.ravel()) == [1] and opts.shrinkAxisMask == 1
            and not any(masks) and not getattr(opts, "offset", False))


def simplify_dynamic_reshapes(model) -> int:
    """Rewrite the converter's dynamic-batch reshape idiom into one ``RESHAPE``.

    ``y = RESHAPE(x, PACK(STRIDED_SLICE(SHAPE(x), [0], [1], [1]), c1, ..., axis=0))``
    with constant scalars ``c1...`` becomes ``y = RESHAPE(x, [-1, c1, ...])`` (a new
    int32 constant): TFLite's RESHAPE computes the ``-1`` as the batch, for every batch
    size. Only exactly that pattern, with single-use intermediates, is rewritten; the
    tensors it leaves unused are removed by `drop_unused_tensors`. Returns the number
    of reshapes rewritten.
    """
    rewritten = 0
    for subgraph in model.subgraphs or []:
        readers = fb.consumers(subgraph)
        producer = fb.producers(subgraph)
        outputs = {int(t) for t in (subgraph.outputs if subgraph.outputs is not None else [])}
        drop = set()
        for pos, reshape in enumerate(subgraph.operators or []):
            if not _is_op(model, reshape, "RESHAPE") or reshape.inputs is None \
                    or len(reshape.inputs) != 2:
                continue
            x, packed = int(reshape.inputs[0]), int(reshape.inputs[1])
            pack_pos = producer.get(packed)
            if pack_pos is None or _only_reader(readers, packed, outputs) is None:
                continue
            pack = subgraph.operators[pack_pos]
            opts = pack.builtinOptions
            if not _is_op(model, pack, "PACK") or opts is None or int(opts.axis) != 0:
                continue
            values: List[int] = []
            batch_at, slice_pos = -1, None
            for slot, t in enumerate(pack.inputs):
                t = int(t)
                const = _const_ints(model, subgraph, t)
                if const is not None and const.size == 1 and const.ndim == 0:
                    values.append(int(const))
                    continue
                sp = producer.get(t)
                if batch_at >= 0 or sp is None or _only_reader(readers, t, outputs) is None:
                    break
                batch_at, slice_pos = slot, sp
                values.append(-1)
            else:
                if batch_at < 0 or slice_pos is None:
                    continue
                sliced = subgraph.operators[slice_pos]
                if not _is_op(model, sliced, "STRIDED_SLICE") or not _is_batch_slice(model, subgraph,
                                                                                sliced):
                    continue
                shape_tensor = int(sliced.inputs[0])
                shape_pos = producer.get(shape_tensor)
                if shape_pos is None or _only_reader(readers, shape_tensor, outputs) is None:
                    continue
                shape_op = subgraph.operators[shape_pos]
                if not _is_op(model, shape_op, "SHAPE") or int(shape_op.inputs[0]) != x:
                    continue
                if subgraph.tensors[int(shape_op.outputs[0])].type != fb.type_value("INT32"):
                    continue
                new_shape = fb.add_tensor(subgraph, "", [len(values)], fb.type_value("INT32"),
                                          fb.add_buffer(model, np.asarray(values, "<i4")
                                                        .tobytes()))
                reshape.inputs = np.asarray([x, new_shape], np.int32)
                drop.update({shape_pos, slice_pos, pack_pos})
                rewritten += 1
        if drop:
            subgraph.operators = [op for p, op in enumerate(subgraph.operators) if p not in drop]
    return rewritten


# ------------------------------------------------------------ unused tensors
def public_tensors(model, s: int, subgraph) -> set:
    """Tensors callers address: the subgraph's inputs/outputs and its signatures' tensors."""
    keep = {int(t) for t in (subgraph.inputs if subgraph.inputs is not None else [])}
    keep.update(int(t) for t in (subgraph.outputs if subgraph.outputs is not None else []))
    for sig in model.signatureDefs or []:
        if int(sig.subgraphIndex) == s:
            keep.update(int(m.tensorIndex) for m in (sig.inputs or []) + (sig.outputs or []))
    return keep


def _remap(values, mapping: Dict[int, int]):
    if values is None:
        return None
    return np.asarray([mapping[int(v)] if int(v) >= 0 else int(v) for v in values], np.int32)


def drop_unused_tensors(model) -> Dict[Tuple[int, int], int]:
    """Remove the tensors no operator, subgraph input/output or signature refers to.

    Returns ``{(subgraph, old index): new index}`` for the tensors kept (an identity
    map when nothing was removed). Buffers they held are dropped by
    `drop_unused_buffers`.
    """
    renumbered: Dict[Tuple[int, int], int] = {}
    for s, subgraph in enumerate(model.subgraphs or []):
        used = public_tensors(model, s, subgraph)
        for op in subgraph.operators or []:
            for field in (op.inputs, op.outputs, op.intermediates):
                used.update(int(t) for t in (field if field is not None else []) if int(t) >= 0)
        count = len(subgraph.tensors or [])
        kept = [i for i in range(count) if i in used]
        mapping = {old: new for new, old in enumerate(kept)}
        renumbered.update({(s, old): new for old, new in mapping.items()})
        if len(kept) == count:
            continue
        subgraph.tensors = [subgraph.tensors[i] for i in kept]
        for op in subgraph.operators or []:
            op.inputs = _remap(op.inputs, mapping)
            op.outputs = _remap(op.outputs, mapping)
            if op.intermediates is not None:
                op.intermediates = _remap(op.intermediates, mapping)
        subgraph.inputs = _remap(subgraph.inputs, mapping)
        subgraph.outputs = _remap(subgraph.outputs, mapping)
        for sig in model.signatureDefs or []:
            if int(sig.subgraphIndex) == s:
                for m in (sig.inputs or []) + (sig.outputs or []):
                    m.tensorIndex = mapping[int(m.tensorIndex)]
    return renumbered


def drop_unused_buffers(model) -> int:
    """Point every tensor without data at the empty buffer 0 and drop unused buffers.

    Buffers no tensor or metadata entry uses go, and the rest are renumbered.
    Returns how many were dropped (0 when buffer 0 is not empty or an index is out
    of range: such a file is left for the interpreter to refuse).
    """
    buffers = model.buffers or []
    if not buffers or (buffers[0].data is not None and len(buffers[0].data) > 0):
        return 0
    referenced = fb.referenced_buffers(model) | set(
        int(b) for b in (model.metadataBuffer if model.metadataBuffer is not None else []))
    if max(referenced | {0}) >= len(buffers) or min(referenced | {0}) < 0:
        return 0
    for _, _, tensor in fb.iter_tensors(model):
        if fb.buffer_bytes(model, tensor.buffer) == 0 and not tensor.isVariable:
            tensor.buffer = 0
    keep = sorted(fb.referenced_buffers(model) | set(
        int(b) for b in (model.metadataBuffer if model.metadataBuffer is not None else []))
        | {0})
    renumber = {old: new for new, old in enumerate(keep)}
    for _, _, tensor in fb.iter_tensors(model):
        tensor.buffer = renumber[int(tensor.buffer)]
    for entry in model.metadata or []:
        entry.buffer = renumber[int(entry.buffer)]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [renumber[int(b)] for b in model.metadataBuffer]
    dropped = len(buffers) - len(keep)
    model.buffers = [buffers[b] for b in keep]
    return dropped


def rename_tensors(model, labels: Dict[Tuple[int, int], str], keep: Sequence[str] = ()) -> None:
    """Drop every tensor name but the public ones and those in ``keep``; name labelled ones.

    ``labels``: ``(subgraph, tensor index) -> name``; a label already taken in its
    subgraph gets ``#2``, ``#3``, ... appended.
    """
    reserved = set(keep)
    for s, subgraph in enumerate(model.subgraphs):
        public = public_tensors(model, s, subgraph)
        taken = {fb.tensor_name(subgraph.tensors[i]) for i in public
                 if i < len(subgraph.tensors)}
        for i, tensor in enumerate(subgraph.tensors):
            if i in public or fb.tensor_name(tensor) in reserved:
                continue
            label = labels.get((s, i))
            if label:
                unique, n = label, 1
                while unique in taken or unique in reserved:
                    n += 1
                    unique = f"{label}#{n}"
                taken.add(unique)
                tensor.name = unique.encode("utf-8")
            else:
                tensor.name = None


def compact_graph(model) -> None:
    """The rewrites that change tensor indices: run them before an encoder records any."""
    simplify_dynamic_reshapes(model)
    drop_unused_tensors(model)


def compact_tables(model, labels: Dict[Tuple[int, int], str], keep: Sequence[str] = ()) -> None:
    """The rewrites that keep tensor indices: `rename_tensors` (``labels``, ``keep``),
    then drop empty quantization tables, redundant ``has_rank``, inner shape signatures,
    the converter's metadata and unused buffers."""
    rename_tensors(model, labels, keep)
    drop_empty_quantization(model)
    drop_redundant_has_rank(model)
    drop_inner_shape_signatures(model)
    drop_converter_metadata(model)
    drop_unused_buffers(model)


__all__ = ["CONVERTER_METADATA", "compact_graph", "compact_tables", "drop_converter_metadata",
           "drop_empty_quantization", "drop_inner_shape_signatures", "drop_redundant_has_rank",
           "drop_unused_buffers", "drop_unused_tensors", "public_tensors", "rename_tensors",
           "simplify_dynamic_reshapes"]
