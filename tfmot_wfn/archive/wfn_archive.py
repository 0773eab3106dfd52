"""Entropy-coded archive of a fixed network: one shared palette, ANS-coded palette indices.

A network made by Weight Fixing Networks holds a few dozen distinct weight values
shared by every layer. This archive stores them once (the palette, float32) and
every weight tensor as palette indices, entropy coded with `constriction`'s ANS
coder under a categorical model of the indices' histogram, so the file reaches the
entropy bound ``N x H / 8`` bytes of the indexed weights plus the headers.
Tensors with a value outside the palette (BatchNorm moving statistics, weights not
fixed yet, integer state) are stored raw, bit for bit. Loading restores every
weight bit-exactly into the architecture (Keras JSON config stored in the file).

```python
from tfmot_wfn.archive.wfn_archive import save_archive, load_archive, read_archive
save_archive(fixed_or_stripped_model, "model.wfn")
model = load_archive("model.wfn")            # Keras model, weights bit-exact
contents = read_archive("model.wfn")          # no Keras: palette, arrays, config
```

Only `save_archive`, `load_archive` and `archive_size_report` touch Keras; the
format itself (`encode_archive` / `decode_archive`) is numpy + constriction.

File format, version 1 (integers little-endian)
-----------------------------------------------

=========  ================================================================
prologue   8 bytes magic ``b"\\x89WFNARC\\n"``, u16 format version (1),
           u16 flags (0; anything else is refused), u64 body length B
body       B bytes, below
epilogue   SHA-256 of prologue + body (32 bytes)
=========  ================================================================

Body, in order:

* config: u32 JSON length, u32 compressed length, zlib-compressed UTF-8 Keras JSON
  (``model.to_json()``).
* palette: u32 K (<= 65536), K float32, finite, strictly increasing in the IEEE
  total order (so -0.0 and +0.0 may both appear, -0.0 first).
* u8 coding: 0 no indexed tensor, 1 one categorical model for all indexed tensors
  (global), 2 one model per indexed tensor.
* u32 T tensors (``model.weights`` order), each: u16 name length, UTF-8 name,
  u8 dtype code, u8 kind (0 raw, 1 palette-indexed: dtype must be float32),
  u8 ndim (<= 32), ndim u64 dims; a raw tensor is followed by its bytes (LE).
* models: the index histogram(s), K unsigned LEB128 varints each (one table for
  coding 1, one per indexed tensor for coding 2, in tensor order).
* stream: u64 W, W u32 words: ONE constriction ``AnsCoder`` stream (32-bit words,
  24-bit probabilities, ``Categorical(counts / total, perfect=False)`` over the
  palette entries whose count is non-zero). Coding 1 codes the concatenation of
  all indexed tensors; coding 2 codes tensor after tensor, each with its model. A
  model with a single used entry codes nothing (its count says it all).
* digest: SHA-256 of the decoded content (config, palette, every tensor's name,
  dtype, shape and value bytes). The epilogue catches damaged files before any
  parsing; the digest catches a decoder that disagrees with the encoder (e.g. a
  future `constriction` that quantises probabilities differently), so a
  readable-but-wrong decode can never pass silently.

Why two codings: one model per tensor codes ``sum_t N_t H_t`` bits, never more than
the global ``N H`` (conditioning on the tensor cannot raise the entropy), but costs
one histogram per tensor instead of one. Both are cheap to compute, so the writer
codes both ways and keeps the smaller file (``coding="auto"``); the global coding
alone already meets the size bound, so the choice can only help.

Every read is bounds-checked; a damaged, truncated, wrong-magic, wrong-version
or out-of-range file raises `ArchiveError` (a ValueError) saying what is wrong.
Declared sizes are checked against the file before anything is allocated: raw
tensors must fit in the file, the coded stream must be at least as long as its
histogram's entropy allows (so a tiny file cannot declare billions of weights),
and the total element count is capped by ``max_elements`` (default 2**28).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import struct
import sys
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfmot_wfn.utils.atomic_files import write_bytes_atomically

MAGIC = b"\x89WFNARC\n"
FORMAT_VERSION = 1
MAX_PALETTE = 1 << 16
MAX_NDIM = 32
MAX_CONFIG_BYTES = 1 << 28
DEFAULT_MAX_ELEMENTS = 1 << 28
SIZE_BOUND_FACTOR = 1.05

_PROLOGUE = struct.Struct("<8sHHQ")
_CHECKSUM_BYTES = 32
_DIGEST_BYTES = 32
# A coded stream may undercut its histogram's entropy by at most the coder's
# state (the last 64-bit ANS state is partly "free"); 128 bits is a safe margin.
_STREAM_SLACK_BITS = 128
_CODINGS = {"none": 0, "global": 1, "per_tensor": 2}
_CODING_NAMES = {v: k for k, v in _CODINGS.items()}
_RAW, _INDEXED = 0, 1

# dtype code -> numpy dtype name; bfloat16 needs ml_dtypes (a TensorFlow dependency).
_DTYPES = {
    1: "float32", 2: "float16", 3: "float64", 4: "bfloat16", 5: "int8", 6: "uint8",
    7: "int16", 8: "uint16", 9: "int32", 10: "uint32", 11: "int64", 12: "uint64", 13: "bool",
}
_DTYPE_CODES = {v: k for k, v in _DTYPES.items()}
_FLOAT32 = 1


class ArchiveError(ValueError):
    """The file is not a valid tfmot_wfn archive (damaged, truncated, wrong version...)."""


@dataclasses.dataclass(frozen=True)
class ArchiveTensor:
    """One stored weight: its values and, for a palette-indexed tensor, its indices."""

    name: str
    array: np.ndarray
    indices: Optional[np.ndarray] = None  # uint8 (K <= 256) or uint16, same shape; None: raw

    @property
    def indexed(self) -> bool:
        return self.indices is not None


@dataclasses.dataclass(frozen=True)
class ArchiveContents:
    """Everything an archive holds, decoded and verified, without Keras."""

    config: str  # the Keras JSON config (`model.to_json()`)
    palette: np.ndarray  # float32, sorted
    tensors: List[ArchiveTensor]
    coding: str  # "none", "global" or "per_tensor"
    format_version: int = FORMAT_VERSION

    @property
    def arrays(self) -> List[np.ndarray]:
        return [t.array for t in self.tensors]

    @property
    def names(self) -> List[str]:
        return [t.name for t in self.tensors]


# ----------------------------------------------------------------- helpers
def _constriction():
    try:
        import constriction
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The tfmot_wfn archive needs the `constriction` entropy coder: "
            "pip install 'tfmot-wfn[lite]' (or pip install constriction).") from e
    return constriction


def _total_order_keys(values: np.ndarray) -> np.ndarray:
    """uint32 keys that sort float32 values in IEEE total order (-0.0 before +0.0)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))


def _from_total_order_keys(keys: np.ndarray) -> np.ndarray:
    keys = keys.astype(np.uint32)
    bits = np.where(keys & np.uint32(0x80000000), keys & np.uint32(0x7FFFFFFF), ~keys)
    return bits.astype(np.uint32).view(np.float32)


def _entropy_bits_of_counts(counts: np.ndarray) -> float:
    """Total ideal code length ``sum c log2(N / c)`` in bits of a histogram."""
    c = counts[counts > 0].astype(np.float64)
    if c.size <= 1:
        return 0.0
    n = c.sum()
    return float((c * (np.log2(n) - np.log2(c))).sum())


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


def _dtype(code: int) -> np.dtype:
    name = _DTYPES[code]
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as e:  # pragma: no cover
            raise ArchiveError("The archive holds a bfloat16 tensor; reading it needs ml_dtypes.") from e
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _le_bytes(array: np.ndarray) -> bytes:
    a = np.ascontiguousarray(array)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    return a.tobytes()


def _shape_bytes(shape: Tuple[int, ...]) -> bytes:
    return struct.pack(f"<B{len(shape)}Q", len(shape), *shape)


def _content_digest(config: bytes, palette: np.ndarray,
                    tensors: Sequence[Tuple[str, int, Tuple[int, ...], bytes]]) -> bytes:
    h = hashlib.sha256(b"tfmot_wfn archive content v1\0")
    h.update(struct.pack("<Q", len(config)))
    h.update(config)
    h.update(struct.pack("<I", palette.size))
    h.update(_le_bytes(palette.astype(np.float32)))
    h.update(struct.pack("<I", len(tensors)))
    for name, code, shape, data in tensors:
        encoded = name.encode("utf-8")
        h.update(struct.pack("<HB", len(encoded), code))
        h.update(encoded)
        h.update(_shape_bytes(shape))
        h.update(struct.pack("<Q", len(data)))
        h.update(data)
    return h.digest()


def _categorical(counts_used: np.ndarray):
    model = _constriction().stream.model
    return model.Categorical(counts_used.astype(np.float64) / float(counts_used.sum()), perfect=False)


# ------------------------------------------------------------------ writer
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
    keys = [_total_order_keys(p)]
    indexed = []
    for a in arrays:
        ok = (a.dtype == np.float32 and numeric.size > 0
              and bool(np.isin(a, numeric, assume_unique=False).all()))
        indexed.append(ok)
        if ok:
            keys.append(np.unique(_total_order_keys(a.ravel())))
    all_keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.uint32)
    if all_keys.size > MAX_PALETTE:
        raise ValueError(
            f"The palette has {all_keys.size} distinct values, more than the archive's limit of "
            f"{MAX_PALETTE}: the model is not a fixed network. Fix it with tfmot_wfn.fix_weights "
            "(run all stages), or pass the palette of the fixed weights explicitly.")
    return _from_total_order_keys(all_keys), indexed


def _encode_stream(groups: Sequence[Tuple[np.ndarray, np.ndarray]]):
    """Code (symbols, counts) groups into one ANS stack; returns uint32 words."""
    coder = _constriction().stream.stack.AnsCoder()
    for symbols, counts in reversed(groups):  # a stack: the last group is pushed first
        used = np.flatnonzero(counts)
        if used.size <= 1 or symbols.size == 0:
            continue
        remap = np.zeros(counts.size, np.int32)
        remap[used] = np.arange(used.size, dtype=np.int32)
        coder.encode_reverse(remap[symbols].astype(np.int32), _categorical(counts[used]))
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
    return models, struct.pack("<Q", words.size) + _le_bytes(words)


def _encode(config: str, weights: Sequence[Tuple[str, np.ndarray]], palette=None,
            coding: str = "auto") -> Tuple[bytes, Dict]:
    if coding not in ("auto", "global", "per_tensor"):
        raise ValueError(f"coding must be 'auto', 'global' or 'per_tensor', got {coding!r}")
    if not isinstance(config, str):
        raise TypeError(f"config must be the Keras JSON string, got {type(config).__name__}")
    names, arrays = [], []
    for name, array in weights:
        a = np.asarray(array)
        dtype_name = "bfloat16" if a.dtype.name == "bfloat16" else a.dtype.name
        if dtype_name not in _DTYPE_CODES:
            raise ValueError(f"Weight {name!r} has dtype {a.dtype}, which the archive cannot store.")
        if a.ndim > MAX_NDIM:
            raise ValueError(f"Weight {name!r} has {a.ndim} dimensions (at most {MAX_NDIM}).")
        if len(str(name).encode("utf-8")) > 0xFFFF:
            raise ValueError(f"Weight name {str(name)[:40]!r}... is longer than 65535 bytes.")
        names.append(str(name))
        arrays.append(a)
    if len(arrays) > 0xFFFFFFFF:
        raise ValueError("Too many tensors for one archive.")
    pal, indexed = _prepare_palette(palette, arrays)
    pal_keys = _total_order_keys(pal)
    k = int(pal.size)

    config_bytes = config.encode("utf-8")
    if len(config_bytes) > MAX_CONFIG_BYTES:
        raise ValueError(f"The model config is {len(config_bytes)} bytes, more than {MAX_CONFIG_BYTES}.")
    zconfig = zlib.compress(config_bytes, 9)
    body = bytearray()
    body += struct.pack("<II", len(config_bytes), len(zconfig)) + zconfig
    config_section = len(body)
    body += struct.pack("<I", k) + _le_bytes(pal)
    coding_at = len(body)
    body += b"\0"  # coding byte, set below
    body += struct.pack("<I", len(arrays))

    index_dtype = np.uint8 if k <= 256 else np.uint16
    indices, digest_rows, raw_bytes, n_raw = [], [], 0, 0
    for name, a, is_indexed in zip(names, arrays, indexed):
        encoded = name.encode("utf-8")
        shape = tuple(int(d) for d in a.shape)
        code = _FLOAT32 if is_indexed else _DTYPE_CODES[
            "bfloat16" if a.dtype.name == "bfloat16" else a.dtype.name]
        body += struct.pack("<H", len(encoded)) + encoded
        body += struct.pack("<BB", code, _INDEXED if is_indexed else _RAW) + _shape_bytes(shape)
        data = _le_bytes(a)
        if is_indexed:
            idx = np.searchsorted(pal_keys, _total_order_keys(a.ravel()))
            indices.append(idx.astype(index_dtype))
        else:
            body += data
            raw_bytes += len(data)
            n_raw += 1
        digest_rows.append((name, code, shape, data))
    table_end = len(body)

    if not indices:
        chosen, models, stream = "none", b"", struct.pack("<Q", 0)
    else:
        options = ["global", "per_tensor"] if coding == "auto" else [coding]
        best = None
        for option in options:
            m, s = _coded_section(indices, k, option)
            if best is None or len(m) + len(s) < len(best[1]) + len(best[2]):
                best = (option, m, s)
        chosen, models, stream = best
    body[coding_at] = _CODINGS[chosen]
    body += models + stream
    body += _content_digest(config_bytes, pal, digest_rows)

    head = _PROLOGUE.pack(MAGIC, FORMAT_VERSION, 0, len(body))
    out = head + bytes(body)
    out += hashlib.sha256(out).digest()

    flat_indexed = (np.concatenate([a.ravel() for a, i in zip(arrays, indexed) if i])
                    if indices else np.zeros(0, np.float32))
    from tfmot_wfn.core.weight_statistics import entropy_bits

    n = int(flat_indexed.size)
    h = float(entropy_bits(flat_indexed)) if n else 0.0
    stream_bytes = len(stream) - 8
    palette_bytes = 4 * k
    header_bytes = len(out) - stream_bytes - palette_bytes
    ideal = n * h / 8.0
    bound = SIZE_BOUND_FACTOR * (ideal + palette_bytes + header_bytes)
    stats = {
        "N": n,
        "H": h,
        "ideal_index_bytes": ideal,
        "palette_size": k,
        "palette_bytes": palette_bytes,
        "header_bytes": header_bytes,
        "bound_bytes": bound,
        "archive_bytes": len(out),
        "within_bound": len(out) <= bound,
        "stream_bytes": stream_bytes,
        "stream_to_ideal": (stream_bytes / ideal) if ideal > 0 else None,
        "coding": chosen,
        "model_bytes": len(models),
        "config_bytes": config_section,
        "table_bytes": table_end - coding_at - raw_bytes,
        "raw_bytes": raw_bytes,
        "raw_tensors": n_raw,
        "indexed_tensors": len(indices),
        "tensors": len(arrays),
    }
    return out, stats


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
    return _encode(config, weights, palette, coding)[0]


# ------------------------------------------------------------------ reader
class _Reader:
    """Bounds-checked little-endian cursor over a bytes-like object."""

    def __init__(self, data: memoryview, start: int, end: int):
        self.data, self.pos, self.end = data, start, end

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.end - self.pos:
            raise ArchiveError(
                f"Truncated or inconsistent archive: {what} needs {n} bytes at offset {self.pos}, "
                f"but only {self.end - self.pos} remain in the body.")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size, what))

    def varints(self, count: int, what: str) -> np.ndarray:
        """`count` unsigned LEB128 varints of at most 9 bytes (< 2**63), vectorised."""
        if count == 0:
            return np.zeros(0, np.int64)
        buf = np.frombuffer(self.data[self.pos:self.end], dtype=np.uint8)
        ends = np.flatnonzero(buf < 0x80)
        if ends.size < count:
            raise ArchiveError(f"Truncated or inconsistent archive: {what} needs {count} varints at "
                               f"offset {self.pos}, the body holds only {ends.size} more.")
        ends = ends[:count]
        starts = np.concatenate([[0], ends[:-1] + 1])
        if int((ends - starts).max()) >= 9:
            raise ArchiveError(f"Corrupt archive: {what} at offset {self.pos} holds a varint longer "
                               "than 9 bytes.")
        chunk = buf[:ends[-1] + 1]
        shift = 7 * (np.arange(chunk.size) - np.repeat(starts, ends - starts + 1))
        parts = (chunk & 0x7F).astype(np.uint64) << shift.astype(np.uint64)
        self.pos += int(chunk.size)
        return np.bitwise_or.reduceat(parts, starts).astype(np.int64)


def _read_prologue(data: memoryview) -> int:
    """Check magic, version, flags, length and checksum; returns the body length."""
    if len(data) < len(MAGIC):
        raise ArchiveError(f"Not a tfmot_wfn archive: the file has only {len(data)} bytes.")
    if bytes(data[:len(MAGIC)]) != MAGIC:
        hint = " (it looks like a zip file, e.g. a .keras model)" if bytes(data[:2]) == b"PK" else ""
        raise ArchiveError(
            f"Not a tfmot_wfn archive: wrong magic bytes {bytes(data[:len(MAGIC)])!r}{hint}, "
            f"expected {MAGIC!r}.")
    if len(data) < _PROLOGUE.size:
        raise ArchiveError(f"Truncated archive: {len(data)} bytes, the header alone needs "
                           f"{_PROLOGUE.size}.")
    _, version, flags, body_len = _PROLOGUE.unpack(data[:_PROLOGUE.size])
    if version != FORMAT_VERSION:
        raise ArchiveError(
            f"Unsupported archive format version {version}: this tfmot_wfn reads version "
            f"{FORMAT_VERSION}" + (" (the file is newer: upgrade tfmot_wfn)." if version > FORMAT_VERSION
                                   else "."))
    if flags != 0:
        raise ArchiveError(f"Unsupported archive flags 0x{flags:04x} (version {version} defines none).")
    expected = _PROLOGUE.size + body_len + _CHECKSUM_BYTES
    if len(data) < expected:
        raise ArchiveError(f"Truncated archive: the header declares {expected} bytes, the file has "
                           f"{len(data)}.")
    if len(data) > expected:
        raise ArchiveError(f"Corrupt archive: {len(data) - expected} unexpected bytes after the end "
                           f"declared by the header ({expected} bytes).")
    stored = bytes(data[expected - _CHECKSUM_BYTES:])
    if hashlib.sha256(data[:expected - _CHECKSUM_BYTES]).digest() != stored:
        raise ArchiveError("Corrupt archive: SHA-256 checksum mismatch (the file was damaged or "
                           "modified).")
    return body_len


def _read_config(r: _Reader) -> bytes:
    raw_len, z_len = r.unpack("II", "config lengths")
    # zlib expands at most ~1032:1, so a small file cannot declare a huge config.
    if raw_len > MAX_CONFIG_BYTES or raw_len > 1032 * z_len + 64:
        raise ArchiveError(f"Corrupt archive: config length {raw_len} is impossible "
                           f"({z_len} compressed bytes, limit {MAX_CONFIG_BYTES}).")
    z = r.take(z_len, "compressed config")
    try:
        d = zlib.decompressobj()
        config = d.decompress(bytes(z), raw_len + 1)
        ok = len(config) == raw_len and d.eof and not d.unused_data and not d.unconsumed_tail
    except zlib.error as e:
        raise ArchiveError(f"Corrupt archive: the config does not decompress ({e}).") from None
    if not ok:
        raise ArchiveError("Corrupt archive: the config does not decompress to its declared length.")
    try:
        parsed = json.loads(config.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ArchiveError(f"Corrupt archive: the config is not valid UTF-8 JSON ({e}).") from None
    if not isinstance(parsed, dict):
        raise ArchiveError("Corrupt archive: the config is not a JSON object.")
    return config


def _read_palette(r: _Reader) -> np.ndarray:
    (k,) = r.unpack("I", "palette size")
    if k > MAX_PALETTE:
        raise ArchiveError(f"Corrupt archive: palette size {k} exceeds the limit {MAX_PALETTE}.")
    palette = np.frombuffer(r.take(4 * k, "palette"), dtype="<f4").astype(np.float32)
    if not np.isfinite(palette).all():
        raise ArchiveError("Corrupt archive: the palette holds NaN or Inf.")
    keys = _total_order_keys(palette)
    if k > 1 and not (keys[1:] > keys[:-1]).all():
        raise ArchiveError("Corrupt archive: the palette is not strictly increasing.")
    return palette


def _decode_stream(words: np.ndarray, groups: Sequence[Tuple[int, np.ndarray]],
                   index_dtype) -> List[np.ndarray]:
    """Decode (count, histogram) groups from one ANS stream into palette indices."""
    ideal = sum(_entropy_bits_of_counts(c) for _, c in groups)
    if 32.0 * words.size + _STREAM_SLACK_BITS < ideal:
        raise ArchiveError(
            f"Corrupt archive: the index histogram needs at least {ideal / 8:.0f} bytes of coded "
            f"stream, the file holds {4 * words.size}.")
    if words.size and words[-1] == 0:
        raise ArchiveError("Corrupt archive: the coded stream ends in a zero word.")
    try:
        coder = _constriction().stream.stack.AnsCoder(words)
    except Exception as e:
        raise ArchiveError(f"Corrupt archive: invalid coded stream ({e}).") from None
    out = []
    for n, counts in groups:
        used = np.flatnonzero(counts)
        if used.size <= 1:  # nothing coded: the histogram says it all
            out.append(np.full(n, used[0] if used.size else 0, dtype=index_dtype))
            continue
        try:
            symbols = np.asarray(coder.decode(_categorical(counts[used]), n))
        except (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError):
            raise
        except BaseException as e:  # constriction may raise a pyo3 PanicException
            raise ArchiveError(f"Corrupt archive: the coded stream does not decode ({e}).") from None
        if (symbols.shape != (n,) or (n and (symbols.min() < 0 or symbols.max() >= used.size))
                or np.bincount(symbols, minlength=used.size).tolist() != counts[used].tolist()):
            raise ArchiveError(
                "Corrupt archive: the decoded palette indices do not match their stored histogram "
                "(damaged stream, or written by an incompatible entropy coder).")
        out.append(used.astype(index_dtype)[symbols])
    if not coder.is_empty():
        raise ArchiveError("Corrupt archive: the coded stream holds more data than its indices.")
    return out


_UNEXPECTED = "Corrupt archive (unexpected decoder error)"


def decode_archive(data, max_elements: int = DEFAULT_MAX_ELEMENTS) -> ArchiveContents:
    """Decode and verify archive bytes (no Keras). Raises `ArchiveError` on any defect.

    Args:
      data: the archive bytes (bytes, bytearray or memoryview).
      max_elements: refuse archives declaring more weight elements in total (a
        guard against absurd sizes; 2**28 elements = 1 GiB of float32).
    """
    data = memoryview(bytes(data)) if not isinstance(data, bytes) else memoryview(data)
    try:
        return _decode(data, max_elements)
    except ArchiveError:
        raise
    except (ValueError, IndexError, OverflowError, TypeError, KeyError, struct.error) as e:
        # Every defect has its own check above; this net only keeps a missed one
        # from escaping as something other than ArchiveError.
        raise ArchiveError(f"{_UNEXPECTED}: {type(e).__name__}: {e}") from e


def _decode(data: memoryview, max_elements: int) -> ArchiveContents:
    body_len = _read_prologue(data)
    r = _Reader(data, _PROLOGUE.size, _PROLOGUE.size + body_len)
    config = _read_config(r)
    palette = _read_palette(r)
    k = palette.size
    (coding_code,) = r.unpack("B", "coding")
    if coding_code not in _CODING_NAMES:
        raise ArchiveError(f"Corrupt archive: unknown index coding {coding_code}.")
    coding = _CODING_NAMES[coding_code]
    (n_tensors,) = r.unpack("I", "tensor count")
    # Every tensor record needs at least 5 bytes: refuse absurd counts before looping.
    if n_tensors * 5 > r.end - r.pos:
        raise ArchiveError(f"Corrupt archive: {n_tensors} tensors cannot fit in the file.")

    records, total = [], 0
    for t in range(n_tensors):
        (name_len,) = r.unpack("H", f"tensor {t} name length")
        try:
            name = bytes(r.take(name_len, f"tensor {t} name")).decode("utf-8")
        except UnicodeDecodeError:
            raise ArchiveError(f"Corrupt archive: tensor {t}'s name is not UTF-8.") from None
        code, kind, ndim = r.unpack("BBB", f"tensor {name!r} header")
        if code not in _DTYPES:
            raise ArchiveError(f"Corrupt archive: tensor {name!r} has unknown dtype code {code}.")
        if kind not in (_RAW, _INDEXED):
            raise ArchiveError(f"Corrupt archive: tensor {name!r} has unknown kind {kind}.")
        if ndim > MAX_NDIM:
            raise ArchiveError(f"Corrupt archive: tensor {name!r} has {ndim} dimensions "
                               f"(at most {MAX_NDIM}).")
        shape = r.unpack(f"{ndim}Q", f"tensor {name!r} shape")
        size = math.prod(shape)
        total += size
        # The non-zero dims bound too: numpy refuses shapes like (0, 2**63).
        if total > max_elements or math.prod(d for d in shape if d) > max_elements:
            raise ArchiveError(
                f"Archive declares more than {max_elements} weight elements (tensor {name!r} has "
                f"shape {shape}); refusing an absurd size (raise max_elements if it is genuine).")
        if kind == _INDEXED:
            if code != _FLOAT32:
                raise ArchiveError(f"Corrupt archive: indexed tensor {name!r} is not float32.")
            if coding == "none" or k == 0:
                raise ArchiveError(f"Corrupt archive: tensor {name!r} is palette-indexed but the "
                                   "archive has no palette or no coded indices.")
            records.append((name, code, shape, size, None))
        else:
            dtype = _dtype(code)
            raw = r.take(size * dtype.itemsize, f"raw tensor {name!r} ({shape}, {dtype})")
            array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
            if dtype == np.bool_ and np.frombuffer(raw, np.uint8).max(initial=0) > 1:
                raise ArchiveError(f"Corrupt archive: bool tensor {name!r} holds bytes other than 0/1.")
            records.append((name, code, shape, size, array))

    indexed = [i for i, rec in enumerate(records) if rec[4] is None]
    if coding != "none" and not indexed:
        raise ArchiveError(f"Corrupt archive: coding {coding!r} but no palette-indexed tensor.")

    n_models = {"none": 0, "global": 1, "per_tensor": len(indexed)}[coding]
    tables = r.varints(n_models * k, "index histograms").reshape(n_models, k)
    if tables.size and int(tables.max()) > max_elements:
        raise ArchiveError("Corrupt archive: an index histogram holds an absurd count.")
    groups = []
    if coding == "global":
        n = sum(records[i][3] for i in indexed)
        if int(tables[0].sum()) != n:
            raise ArchiveError(f"Corrupt archive: the index histogram counts {int(tables[0].sum())} "
                               f"weights, the indexed tensors hold {n}.")
        groups.append((n, tables[0]))
    elif coding == "per_tensor":
        for i, counts in zip(indexed, tables):
            if int(counts.sum()) != records[i][3]:
                raise ArchiveError(
                    f"Corrupt archive: the histogram of {records[i][0]!r} counts {int(counts.sum())} "
                    f"weights, the tensor holds {records[i][3]}.")
            groups.append((records[i][3], counts))
    (n_words,) = r.unpack("Q", "stream length")
    if n_words > (r.end - r.pos) // 4:
        raise ArchiveError(f"Truncated or inconsistent archive: the coded stream declares {n_words} "
                           f"words, only {r.end - r.pos} bytes remain in the body.")
    words = np.frombuffer(r.take(4 * n_words, "coded stream"), dtype="<u4").astype(np.uint32)
    digest = bytes(r.take(_DIGEST_BYTES, "content digest"))
    if r.pos != r.end:
        raise ArchiveError(f"Corrupt archive: {r.end - r.pos} unexpected bytes at the end of the body.")
    if coding == "none" and words.size:
        raise ArchiveError("Corrupt archive: a coded stream but no palette-indexed tensor.")

    index_dtype = np.uint8 if k <= 256 else np.uint16
    decoded = _decode_stream(words, groups, index_dtype) if groups else []
    if coding == "global":
        flat = decoded[0]
        pieces, offset = [], 0
        for i in indexed:
            pieces.append(flat[offset:offset + records[i][3]])
            offset += records[i][3]
        decoded = pieces

    palette_bits = palette.view(np.uint32)
    tensors, digest_rows, it = [], [], iter(decoded)
    for name, code, shape, size, array in records:
        if array is None:
            idx = next(it)
            indices = idx.reshape(shape)
            array = palette_bits[idx].view(np.float32).reshape(shape)
            tensors.append(ArchiveTensor(name, array, indices))
        else:
            tensors.append(ArchiveTensor(name, array, None))
        digest_rows.append((name, code, tuple(shape), _le_bytes(array)))
    if _content_digest(config, palette, digest_rows) != digest:
        raise ArchiveError(
            "Archive content digest mismatch: the decoded weights differ from what was written "
            "(written by an incompatible entropy coder version, or the file was forged).")
    return ArchiveContents(config=config.decode("utf-8"), palette=palette, tensors=tensors,
                           coding=coding, format_version=FORMAT_VERSION)


def read_archive(path, max_elements: int = DEFAULT_MAX_ELEMENTS) -> ArchiveContents:
    """Read, verify and decode an archive file without Keras (see `decode_archive`)."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_archive(data, max_elements=max_elements)


# ------------------------------------------------------- Keras glue (thin)
def _model_palette_and_plain(model, palette=None):
    """(plain model, palette): a fix_weights model is stripped; its palette is its fixed values."""
    from tfmot_wfn.keras import report as metrics
    from tfmot_wfn.keras.fix import strip_fixing
    from tfmot_wfn.keras.network import wrappers_of

    wrapped = bool(wrappers_of(model))
    if palette is None:
        try:
            palette = metrics.palette(model)
        except ValueError:  # no fixable weight at all: everything raw
            palette = np.zeros(0, np.float32)
    plain = strip_fixing(model) if wrapped else model
    return plain, np.asarray(palette, dtype=np.float32)


def _model_payload(model, palette=None, coding: str = "auto") -> Tuple[bytes, Dict]:
    plain, pal = _model_palette_and_plain(model, palette)
    try:
        config = plain.to_json()
    except NotImplementedError as e:
        raise ValueError(
            f"save_archive needs a Functional or Sequential model whose architecture serialises "
            f"with model.to_json(); {type(plain).__name__} does not ({e}).") from None
    from tfmot_wfn.keras.compat import variable_path

    weights = [(variable_path(v), np.asarray(v.numpy())) for v in plain.weights]
    return _encode(config, weights, pal, coding)


def save_archive(model, path, palette=None, coding: str = "auto") -> Dict:
    """Write the entropy-coded archive of a fixed model; returns `archive_size_report`'s dict.

    Args:
      model: a model made by `tfmot_wfn.fix_weights` (it is stripped first; its
        palette is the values of its fixed weights) or a plain Keras model such as
        `tfmot_wfn.strip_fixing`'s result (its palette is the distinct values of its
        kernels, biases and normalization gamma/beta).
      path: the file to write (written atomically: a temporary file, then renamed).
      palette: override the palette (e.g. `tfmot_wfn.palette(fixed)` taken before
        stripping a partly fixed model, whose free weights then stay raw).
      coding: "auto", "global" or "per_tensor" (see the module docstring).

    A model of more than 2**28 weights is written, but reading it back needs
    ``load_archive(path, max_elements=...)`` (the reader's guard against absurd sizes).
    """
    data, stats = _model_payload(model, palette, coding)
    write_bytes_atomically(path, data)
    return stats


def archive_size_report(model, palette=None, coding: str = "auto") -> Dict:
    """Sizes of the model's archive (built in memory) against the entropy bound.

    Keys: ``N`` (palette-indexed weights), ``H`` (their empirical entropy in bits,
    `tfmot_wfn.core.entropy_bits`), ``ideal_index_bytes`` (N H / 8), ``palette_bytes``,
    ``header_bytes`` (everything but the coded indices and the palette: prologue,
    config, tensor table, histograms, raw tensors, digests), ``bound_bytes``
    (1.05 x (N H / 8 + palette + headers)), ``archive_bytes``, ``within_bound``,
    ``stream_bytes`` (the coded indices alone) and ``stream_to_ideal`` (their ratio to
    N H / 8), plus a breakdown (coding, model/config/table/raw bytes, tensor counts).
    """
    return _model_payload(model, palette, coding)[1]


def load_archive(path, custom_objects=None, max_elements: int = DEFAULT_MAX_ELEMENTS):
    """Rebuild the Keras model stored in an archive, its weights restored bit-exactly."""
    from tfmot_wfn.keras.compat import keras, numpy_dtype, variable_path

    contents = read_archive(path, max_elements=max_elements)
    try:
        model = keras.models.model_from_json(contents.config, custom_objects=custom_objects)
    except Exception as e:
        raise ArchiveError(f"The archive's architecture cannot be rebuilt by Keras: {e}") from e
    variables = model.weights
    if len(variables) != len(contents.tensors):
        raise ArchiveError(f"The archive holds {len(contents.tensors)} weights, the rebuilt "
                           f"architecture has {len(variables)}.")
    for v, t in zip(variables, contents.tensors):
        shape = tuple(int(d) for d in v.shape)
        if shape != t.array.shape or np.dtype(numpy_dtype(v)) != t.array.dtype:
            raise ArchiveError(
                f"Weight {variable_path(v)!r} of the rebuilt model is {shape} {v.dtype}, the archive's "
                f"{t.name!r} is {t.array.shape} {t.array.dtype}.")
        if variable_path(v).rsplit("/", 1)[-1] != t.name.rsplit("/", 1)[-1]:
            raise ArchiveError(f"Weight order mismatch: the rebuilt model's {variable_path(v)!r} meets the "
                               f"archive's {t.name!r}.")
    for v, t in zip(variables, contents.tensors):
        v.assign(t.array)
    return model
