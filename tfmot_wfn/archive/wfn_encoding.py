"""Write the ``.wfn`` archive format (`wfn_format`): `encode_archive` (numpy + constriction).

```python
data, sizes = encode_archive_with_sizes(model_json, [("dense/kernel", kernel)], palette)
print(sizes["archive_bytes"], sizes["bound_bytes"], sizes["entropy_bits_per_weight"])
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import warnings
import zlib
from typing import Dict, List, Sequence, Tuple

import numpy as np

from tfmot_wfn.archive.wfn_format import (
    CODINGS, DTYPE_CODES, FLOAT32_CODE, FORMAT_VERSION, INDEXED, MAGIC, MAX_CONFIG_BYTES, MAX_NDIM,
    MAX_PALETTE, PROLOGUE, RAW, SIZE_BOUND_FACTOR, categorical_model, content_digest, entropy_coder,
    le_bytes, shape_bytes, total_order_keys,
)
from tfmot_wfn.core.weight_statistics import entropy_bits


def _from_total_order_keys(keys: np.ndarray) -> np.ndarray:
    keys = keys.astype(np.uint32)
    bits = np.where(keys & np.uint32(0x80000000), keys & np.uint32(0x7FFFFFFF), ~keys)
    return bits.astype(np.uint32).view(np.float32)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varints(values: np.ndarray) -> bytes:
    return b"".join(_varint(int(v)) for v in values)


def _prepare_palette(palette, arrays: Sequence[np.ndarray]) -> Tuple[np.ndarray, List[bool]]:
    """The stored palette and which tensors are palette-indexed.

    A float32 tensor is indexed when every value equals a palette entry. The stored
    palette is the given one (finite entries, distinct bit patterns) plus the bit
    patterns those tensors use, so -0.0 is stored when a weight is -0.0 and the
    palette holds 0.0: the restore is bit-exact.
    """
    p = np.asarray(palette if palette is not None else [], dtype=np.float32).ravel()
    p = p[np.isfinite(p)]
    numeric = np.unique(p)  # numeric membership (-0.0 == 0.0)
    keys = [total_order_keys(p)]
    indexed = []
    for a in arrays:
        ok = (a.dtype == np.float32 and numeric.size > 0
              and bool(np.isin(a, numeric, assume_unique=False).all()))
        indexed.append(ok)
        if ok:
            keys.append(np.unique(total_order_keys(a.ravel())))
    all_keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.uint32)
    if all_keys.size > MAX_PALETTE:
        raise ValueError(
            f"The palette has {all_keys.size} distinct values, more than the archive's limit of "
            f"{MAX_PALETTE}: the model is not a fixed network. Fix it with tfmot_wfn.fix_weights "
            "(run all stages), or pass the palette of the fixed weights explicitly.")
    return _from_total_order_keys(all_keys), indexed


def _encode_stream(groups: Sequence[Tuple[np.ndarray, np.ndarray]]):
    """Code (symbols, counts) groups into one ANS stack; returns uint32 words."""
    coder = entropy_coder().stream.stack.AnsCoder()
    for symbols, counts in reversed(groups):  # a stack: the last group is pushed first
        used = np.flatnonzero(counts)
        if used.size <= 1 or symbols.size == 0:
            continue
        remap = np.zeros(counts.size, np.int32)
        remap[used] = np.arange(used.size, dtype=np.int32)
        coder.encode_reverse(remap[symbols].astype(np.int32), categorical_model(counts[used]))
    return np.asarray(coder.get_compressed(), dtype=np.uint32)


def _coded_section(indices: List[np.ndarray], k: int, coding: str) -> Tuple[bytes, bytes]:
    """(models bytes, stream bytes) of one coding of the indexed tensors."""
    if coding == "global":
        flat = np.concatenate([i.ravel() for i in indices])
        counts = np.bincount(flat, minlength=k)
        models = _varints(counts)
        words = _encode_stream([(flat, counts)])
    else:
        groups = [(i.ravel(), np.bincount(i.ravel(), minlength=k)) for i in indices]
        models = b"".join(_varints(c) for _, c in groups)
        words = _encode_stream(groups)
    return models, struct.pack("<Q", words.size) + le_bytes(words)


def _checked_weights(weights: Sequence[Tuple[str, np.ndarray]]
                     ) -> Tuple[List[str], List[np.ndarray]]:
    """Names and arrays of ``weights``, refusing what the format cannot store."""
    names, arrays = [], []
    for name, array in weights:
        a = np.asarray(array)
        if _dtype_name(a) not in DTYPE_CODES:
            raise ValueError(f"Weight {name!r} has dtype {a.dtype}, which the archive cannot store.")
        if a.ndim > MAX_NDIM:
            raise ValueError(f"Weight {name!r} has {a.ndim} dimensions (at most {MAX_NDIM}).")
        if len(str(name).encode("utf-8")) > 0xFFFF:
            raise ValueError(f"Weight name {str(name)[:40]!r}... is longer than 65535 bytes.")
        names.append(str(name))
        arrays.append(a)
    if len(arrays) > 0xFFFFFFFF:
        raise ValueError("Too many tensors for one archive.")
    return names, arrays


def _dtype_name(a: np.ndarray) -> str:
    return "bfloat16" if a.dtype.name == "bfloat16" else a.dtype.name


def _config_section(config: str) -> Tuple[bytes, bytes]:
    """``(UTF-8 config, its section: lengths + zlib stream)``."""
    config_bytes = config.encode("utf-8")
    if len(config_bytes) > MAX_CONFIG_BYTES:
        raise ValueError(f"The model config is {len(config_bytes)} bytes, more than {MAX_CONFIG_BYTES}.")
    zconfig = zlib.compress(config_bytes, 9)
    return config_bytes, struct.pack("<II", len(config_bytes), len(zconfig)) + zconfig


@dataclasses.dataclass
class _TensorTable:
    """The tensor records of the body (raw tensors' bytes included) and the indexed tensors."""

    data: bytearray
    indices: List[np.ndarray]  # per indexed tensor, flat palette indices
    digest_rows: List[Tuple[str, int, Tuple[int, ...], bytes]]
    raw_bytes: int = 0
    raw_tensors: int = 0


def _tensor_table(names: List[str], arrays: List[np.ndarray], indexed: List[bool],
                  pal: np.ndarray) -> _TensorTable:
    pal_keys = total_order_keys(pal)
    index_dtype = np.uint8 if pal.size <= 256 else np.uint16
    table = _TensorTable(bytearray(), [], [])
    for name, a, is_indexed in zip(names, arrays, indexed):
        encoded = name.encode("utf-8")
        shape = tuple(int(d) for d in a.shape)
        code = FLOAT32_CODE if is_indexed else DTYPE_CODES[_dtype_name(a)]
        table.data += struct.pack("<H", len(encoded)) + encoded
        table.data += struct.pack("<BB", code, INDEXED if is_indexed else RAW) + shape_bytes(shape)
        data = le_bytes(a)
        if is_indexed:
            idx = np.searchsorted(pal_keys, total_order_keys(a.ravel()))
            table.indices.append(idx.astype(index_dtype))
        else:
            table.data += data
            table.raw_bytes += len(data)
            table.raw_tensors += 1
        table.digest_rows.append((name, code, shape, data))
    return table


def _best_coding(indices: List[np.ndarray], k: int, coding: str) -> Tuple[str, bytes, bytes]:
    """``(coding, models bytes, stream bytes)``: the smaller of the allowed codings."""
    if not indices:
        return "none", b"", struct.pack("<Q", 0)
    best = None
    for option in (["global", "per_tensor"] if coding == "auto" else [coding]):
        m, s = _coded_section(indices, k, option)
        if best is None or len(m) + len(s) < len(best[1]) + len(best[2]):
            best = (option, m, s)
    return best


class SizeReport(dict):
    """The sizes `encode_archive` measured (a dict; see `archive_size_report` for the keys).

    The keys ``"N"`` and ``"H"`` of tfmot_wfn 0.1 still read, with a
    `DeprecationWarning`: they are ``"indexed_weights"`` and ``"entropy_bits_per_weight"``.
    """

    OLD_KEYS = {"N": "indexed_weights", "H": "entropy_bits_per_weight"}

    def __missing__(self, key):
        new = self.OLD_KEYS.get(key)
        if new is None or new not in self:
            raise KeyError(key)
        warnings.warn(f"archive size key {key!r} is deprecated: use {new!r}", DeprecationWarning,
                      stacklevel=2)
        return self[new]


def _size_report(archive_bytes: int, indexed_values: np.ndarray, layout: Dict) -> SizeReport:
    """The archive's sizes against the entropy bound; ``layout``: the section sizes."""
    n = int(indexed_values.size)
    h = float(entropy_bits(indexed_values)) if n else 0.0
    palette_bytes = 4 * layout["palette_size"]
    header_bytes = archive_bytes - layout["stream_bytes"] - palette_bytes
    ideal = n * h / 8.0
    bound = SIZE_BOUND_FACTOR * (ideal + palette_bytes + header_bytes)
    return SizeReport(
        indexed_weights=n,
        entropy_bits_per_weight=h,
        ideal_index_bytes=ideal,
        palette_size=layout["palette_size"],
        palette_bytes=palette_bytes,
        header_bytes=header_bytes,
        bound_bytes=bound,
        archive_bytes=archive_bytes,
        within_bound=archive_bytes <= bound,
        stream_bytes=layout["stream_bytes"],
        stream_to_ideal=(layout["stream_bytes"] / ideal) if ideal > 0 else None,
        **{key: layout[key] for key in ("coding", "model_bytes", "config_bytes", "table_bytes",
                                        "raw_bytes", "raw_tensors", "indexed_tensors", "tensors")})


def encode_archive_with_sizes(config: str, weights: Sequence[Tuple[str, np.ndarray]],
                              palette=None, coding: str = "auto") -> Tuple[bytes, SizeReport]:
    """`encode_archive`, and the file's sizes against the entropy bound (`SizeReport`)."""
    if coding not in ("auto", "global", "per_tensor"):
        raise ValueError(f"coding must be 'auto', 'global' or 'per_tensor', got {coding!r}")
    if not isinstance(config, str):
        raise TypeError(f"config must be the Keras JSON string, got {type(config).__name__}")
    names, arrays = _checked_weights(weights)
    pal, indexed = _prepare_palette(palette, arrays)
    k = int(pal.size)
    config_bytes, config_section = _config_section(config)
    table = _tensor_table(names, arrays, indexed, pal)
    chosen, models, stream = _best_coding(table.indices, k, coding)
    body = b"".join([
        config_section, struct.pack("<I", k), le_bytes(pal),
        bytes([CODINGS[chosen]]), struct.pack("<I", len(arrays)), table.data,
        models, stream, content_digest(config_bytes, pal, table.digest_rows)])
    out = PROLOGUE.pack(MAGIC, FORMAT_VERSION, 0, len(body)) + body
    out += hashlib.sha256(out).digest()
    indexed_values = (np.concatenate([a.ravel() for a, i in zip(arrays, indexed) if i])
                      if table.indices else np.zeros(0, np.float32))
    layout = dict(
        palette_size=k, stream_bytes=len(stream) - 8, coding=chosen, model_bytes=len(models),
        config_bytes=len(config_section), table_bytes=5 + len(table.data) - table.raw_bytes,
        raw_bytes=table.raw_bytes, raw_tensors=table.raw_tensors,
        indexed_tensors=len(table.indices), tensors=len(arrays))
    return out, _size_report(len(out), indexed_values, layout)


def encode_archive(config: str, weights: Sequence[Tuple[str, np.ndarray]], palette=None,
                   coding: str = "auto") -> bytes:
    """The archive bytes of a Keras JSON config and ``(name, array)`` weights (no Keras).

    Args:
      config: the Keras JSON config (`model.to_json()`).
      weights: ``(name, array)`` pairs in ``model.weights`` order.
      palette: the shared palette (any order). A float32 weight whose values all
        equal palette entries is stored as entropy-coded indices; any other weight
        raw. None: everything raw.
      coding: "auto" (smaller of the two), "global" or "per_tensor".
    """
    return encode_archive_with_sizes(config, weights, palette, coding)[0]


__all__ = ["SizeReport", "encode_archive", "encode_archive_with_sizes"]
