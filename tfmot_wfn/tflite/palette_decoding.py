"""Decode a palette TFLite flatbuffer back to static float32 weights, in memory.

Interpreters delegate convolutions and matrix products to XNNPACK only when
their weights are constant, so running the ``CAST`` + ``GATHER`` decoding on
every invocation is several times slower than the float model. Decoding once
at load time restores the float model's speed while the file stays small:
each ``GATHER(palette, CAST(indices))`` is replaced by a constant float32
buffer holding ``palette[indices]`` and the decode ops are dropped, and each
BatchNorm scale kept as a ``MUL`` is multiplied back into the weights and bias
of the op before it (which gets the MUL's activation back), as the converter
had folded it.

```python
data = open("model_palette.tflite", "rb").read()
float_data = decode_palette(data)      # bytes of an ordinary float TFLite model
```
"""

from __future__ import annotations

from typing import Set

import numpy as np

from tfmot_wfn.tflite import flatbuffer as fb
from tfmot_wfn.tflite.scale_ops import fold_scale_ops
from tfmot_wfn.tflite.palette_format import (
    METADATA_NAME,
    PALETTE_TENSOR_NAME,
    check_read_palette,
    find_decoders,
    palette_tensor_index,
    read_metadata,
)


def _palette_values(model, subgraph, tensor_index: int, expected_size: int) -> np.ndarray:
    tensor = subgraph.tensors[tensor_index]
    values = fb.constant_array(model, tensor)
    if values is None or tensor.type != fb.type_value("FLOAT32") or values.ndim != 1:
        raise ValueError(f"damaged palette file: {PALETTE_TENSOR_NAME!r} is not a constant "
                         "float32 vector")
    if values.size != expected_size:
        raise ValueError(f"damaged palette file: the palette holds {values.size} values, the "
                         f"metadata says {expected_size}")
    return check_read_palette(values)


def _decode_subgraph(model, subgraph, metadata, encoding_buffers: Set[int]) -> None:
    """Replace each GATHER(palette, CAST(indices)) of one subgraph by a float32 constant."""
    palette_index = palette_tensor_index(subgraph, metadata.palette_tensor)
    if palette_index is None or palette_index not in fb.consumers(subgraph):
        return  # no palette here, or already decoded
    palette = _palette_values(model, subgraph, palette_index, metadata.palette_size)
    encoding_buffers.add(int(subgraph.tensors[palette_index].buffer))
    readers = fb.consumers(subgraph)
    drop = set()
    for decoder in find_decoders(model, subgraph, palette_index):
        index_tensor = subgraph.tensors[decoder.index_tensor]
        indices = fb.constant_array(model, index_tensor)
        encoding_buffers.add(int(index_tensor.buffer))
        if indices.dtype.kind not in "iu":
            raise ValueError("damaged palette file: palette indices are not integers")
        bad = indices[(indices < 0) | (indices >= palette.size)]
        if bad.size:
            raise ValueError(
                f"damaged palette file: index {int(bad.flat[0])} outside the palette of "
                f"{palette.size} values in {fb.tensor_name(index_tensor)!r}")
        output = subgraph.tensors[decoder.output_tensor]
        values = palette[indices.astype(np.int64)]
        if values.shape != fb.tensor_shape(output):
            raise ValueError(f"damaged palette file: {fb.tensor_name(output)!r} has shape "
                             f"{fb.tensor_shape(output)} but its indices {values.shape}")
        output.buffer = fb.add_buffer(model, values.astype("<f4").tobytes())
        drop.add(decoder.gather_op)
        if decoder.cast_op is not None:
            positions = subgraph.operators[decoder.gather_op].inputs[1]
            if len(readers.get(int(positions), [])) == 1:
                drop.add(decoder.cast_op)
    subgraph.operators = [op for pos, op in enumerate(subgraph.operators) if pos not in drop]


def decode_palette(tflite: bytes) -> bytes:
    """The same model with every palette-indexed weight stored as float32 again.

    Bytes without ``tfmot_wfn`` metadata (a dense file) are returned unchanged; the
    result has no ``tfmot_wfn`` metadata (it is an ordinary float model).

    Raises:
      ValueError: not a TFLite file, unreadable metadata, or an index outside the palette.
    """
    model = fb.read_model(tflite)
    metadata = read_metadata(model)
    if metadata is None:
        return bytes(tflite)
    encoding_buffers: Set[int] = set()  # palette and index buffers, dropped when no longer read
    for s, subgraph in enumerate(model.subgraphs):
        _decode_subgraph(model, subgraph, metadata, encoding_buffers)
        # BatchNorm scales kept as MULs go back into the (now static) weights.
        scales = metadata.scale_indices(s, subgraph)
        if scales:
            encoding_buffers.update(int(subgraph.tensors[i].buffer) for i in scales)
            fold_scale_ops(model, subgraph, scales)

    still_read = set()
    for subgraph in model.subgraphs:
        outputs = set(subgraph.outputs if subgraph.outputs is not None else [])
        readers = fb.consumers(subgraph)
        still_read.update(int(t.buffer) for i, t in enumerate(subgraph.tensors or [])
                          if i in readers or i in outputs)
    referenced = fb.referenced_buffers(model)  # weights replaced by folding a scale: unused
    for b in encoding_buffers - still_read | (set(range(1, len(model.buffers))) - referenced):
        if b > 0:
            model.buffers[b].data = None
    # The result is a plain float model: drop the palette description.
    fb.remove_metadata(model, METADATA_NAME)
    return fb.write_model(model)
