"""Sort float32 weights by value, ties by their index: one in-place sort of 64-bit keys.

Pure numpy. A fixing stage starts from the free weights sorted by value (`greedy_fixing`),
its largest single cost on a big network (`benchmarks/clustering_speed.md`). Here each
weight becomes one unsigned 64-bit key, its value's bits mapped so that unsigned order is
numeric order in the high half and its index in the low half, and the keys are sorted in
place (numpy's vectorised sort of plain integers); the sorted values and indices are read
back from the keys, with no gather from the unsorted array. The order is total: equal
values by index (``np.argsort``'s quicksort leaves ties in no particular order), and
``-0.0`` before ``0.0``.

```python
import numpy as np
from tfmot_wfn.core.value_sort import sort_by_value
values, index = sort_by_value(np.array([0.5, -1.0, 0.5], np.float32), np.arange(3))
# values: [-1.0, 0.5, 0.5], index: [1, 0, 2]
```
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

_SIGN = np.uint32(0x80000000)
_LOW = np.uint64(0xFFFFFFFF)
_HALF = np.uint64(32)
_BLOCK = 1 << 20


def sort_by_value(values: np.ndarray, index: Optional[np.ndarray] = None,
                  index_dtype=np.int64) -> Tuple[np.ndarray, np.ndarray]:
    """``(sorted values, their indices)``: ``values`` (float32, no NaN) in ascending order,
    equal values by ``index`` (non-negative integers below 2**32, one per value, e.g. the
    values' positions; None: the positions ``0, 1, ...``, never materialised unsorted); as
    ``np.lexsort((index, values))`` would order them, but with ``-0.0`` before ``0.0``.

    The indices come back with ``index``'s dtype (``index_dtype`` for None); the inputs are
    not modified. Indices of 2**32 or more (over 4 billion weights) take ``np.lexsort``.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    if index is None:
        dtype = np.dtype(index_dtype)
        too_large = values.size > 0xFFFFFFFF
    else:
        index = np.asarray(index)
        if index.shape != values.shape:
            raise ValueError(f"values and index must be of one length, got shapes "
                             f"{values.shape} and {index.shape}")
        if index.dtype.kind not in "iu":
            raise TypeError(f"index must hold integers, got dtype {index.dtype}")
        if not index.dtype.isnative:  # the key reads the index's bytes
            index = index.astype(index.dtype.newbyteorder("="))
        dtype = index.dtype
        too_large = index.size > 0 and (int(index.min()) < 0 or int(index.max()) > 0xFFFFFFFF)
    if values.size == 0:
        return values.copy(), np.zeros(0, dtype)
    if too_large:
        index = np.arange(values.size, dtype=dtype) if index is None else index
        order = np.lexsort((index, ~np.signbit(values), values))
        return values[order], index[order]
    keys = _value_keys(values)
    keys <<= _HALF
    if index is None:  # the positions, block by block: never a whole unsorted array
        for start in range(0, keys.size, _BLOCK):
            stop = min(start + _BLOCK, keys.size)
            np.bitwise_or(keys[start:stop], np.arange(start, stop, dtype=np.uint64),
                          out=keys[start:stop])
    else:
        # The same bits as unsigned (the indices are >= 0): uint64 | int64 has no integer loop.
        np.bitwise_or(keys, index.view(f"u{index.itemsize}"), out=keys)
    keys.sort()
    # Read back into the result dtypes directly (no uint64 temporaries), then free the keys
    # before `_key_values`' temporary.
    sorted_index, high = np.empty(keys.shape, dtype), np.empty(keys.shape, np.uint32)
    np.bitwise_and(keys, _LOW, out=sorted_index, casting="unsafe")
    np.right_shift(keys, _HALF, out=high, casting="unsafe")
    del keys
    return _key_values(high), sorted_index


def _value_keys(values: np.ndarray) -> np.ndarray:
    """uint64 keys (in the low 32 bits) whose unsigned order is the float32 values' order:
    a non-negative value gets its sign bit set, a negative one all its bits flipped."""
    bits = values.view(np.uint32)
    flip = bits >> np.uint32(31)   # 1 for a negative value
    np.negative(flip, out=flip)    # all ones for a negative value, 0 otherwise
    flip |= _SIGN
    flip ^= bits
    return flip.astype(np.uint64)


def _key_values(keys: np.ndarray) -> np.ndarray:
    """The float32 values of uint32 keys (`_value_keys` undone)."""
    flip = keys >> np.uint32(31)   # 1 for a non-negative value
    flip -= np.uint32(1)           # 0 for a non-negative value, all ones otherwise
    flip |= _SIGN
    flip ^= keys
    return flip.view(np.float32)


__all__ = ["sort_by_value"]
