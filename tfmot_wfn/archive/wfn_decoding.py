"""Read and verify the ``.wfn`` archive format (`wfn_format`): `decode_archive`, `read_archive`.

numpy + constriction only. Every read is bounds-checked and every defect raises
`ArchiveError` saying what is wrong (see `wfn_format`).

```python
contents = read_archive("model.wfn")        # palette, arrays (bit-exact), Keras JSON config
print(contents.palette.size, [t.name for t in contents.tensors if t.indexed])
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import struct
import zlib
from typing import List, Optional, Sequence, Tuple

import numpy as np

from tfmot_wfn.archive.wfn_format import (
    CHECKSUM_BYTES, CODING_NAMES, DEFAULT_MAX_ELEMENTS, DIGEST_BYTES, DTYPES, FLOAT32_CODE,
    FORMAT_VERSION, INDEXED, MAGIC, MAX_CONFIG_BYTES, MAX_NDIM, MAX_PALETTE, PROLOGUE, RAW,
    ArchiveContents, ArchiveError, ArchiveTensor, categorical_model, content_digest, entropy_coder,
    le_bytes, total_order_keys,
)

# A coded stream may undercut the code length of its histogram's symbols by the coder's
# state (the last 64-bit ANS state is partly "free") and by the rounding of the
# probabilities to the coder's fixed point; 128 bits and 2% are safe margins.
_STREAM_SLACK_BITS = 128
_STREAM_SLACK_SHARE = 0.02


def _entropy_bits_of_counts(counts: np.ndarray) -> float:
    """A lower bound of a histogram's coded length in bits: its ideal code length
    ``sum c log2(N / c)`` without the first used symbol's share. The decoder reads zero
    bits past the end of the stream, and zeros decode as that symbol (its cumulative
    frequency is 0): a run of it at the end of the decoding order costs nothing (a
    tensor's trailing zeros, when no palette value is negative)."""
    c = counts[counts > 0].astype(np.float64)
    if c.size <= 1:
        return 0.0
    n = c.sum()
    return float((c[1:] * (np.log2(n) - np.log2(c[1:]))).sum())


def _numpy_dtype(code: int) -> np.dtype:
    name = DTYPES[code]
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as e:  # pragma: no cover
            raise ArchiveError("The archive holds a bfloat16 tensor; reading it needs ml_dtypes.") from e
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


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
    if len(data) < PROLOGUE.size:
        raise ArchiveError(f"Truncated archive: {len(data)} bytes, the header alone needs "
                           f"{PROLOGUE.size}.")
    _, version, flags, body_len = PROLOGUE.unpack(data[:PROLOGUE.size])
    if version != FORMAT_VERSION:
        raise ArchiveError(
            f"Unsupported archive format version {version}: this tfmot_wfn reads version "
            f"{FORMAT_VERSION}" + (" (the file is newer: upgrade tfmot_wfn)." if version > FORMAT_VERSION
                                   else "."))
    if flags != 0:
        raise ArchiveError(f"Unsupported archive flags 0x{flags:04x} (version {version} defines none).")
    expected = PROLOGUE.size + body_len + CHECKSUM_BYTES
    if len(data) < expected:
        raise ArchiveError(f"Truncated archive: the header declares {expected} bytes, the file has "
                           f"{len(data)}.")
    if len(data) > expected:
        raise ArchiveError(f"Corrupt archive: {len(data) - expected} unexpected bytes after the end "
                           f"declared by the header ({expected} bytes).")
    stored = bytes(data[expected - CHECKSUM_BYTES:])
    if hashlib.sha256(data[:expected - CHECKSUM_BYTES]).digest() != stored:
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
    keys = total_order_keys(palette)
    if k > 1 and not (keys[1:] > keys[:-1]).all():
        raise ArchiveError("Corrupt archive: the palette is not strictly increasing.")
    return palette


def _decode_stream(words: np.ndarray, groups: Sequence[Tuple[int, np.ndarray]],
                   index_dtype) -> List[np.ndarray]:
    """Decode (count, histogram) groups from one ANS stream into palette indices."""
    ideal = sum(_entropy_bits_of_counts(c) for _, c in groups)
    if 32.0 * words.size + _STREAM_SLACK_BITS < (1.0 - _STREAM_SLACK_SHARE) * ideal:
        raise ArchiveError(
            f"Corrupt archive: the index histogram needs at least {ideal / 8:.0f} bytes of coded "
            f"stream, the file holds {4 * words.size}.")
    if words.size and words[-1] == 0:
        raise ArchiveError("Corrupt archive: the coded stream ends in a zero word.")
    try:
        coder = entropy_coder().stream.stack.AnsCoder(words)
    except Exception as e:
        raise ArchiveError(f"Corrupt archive: invalid coded stream ({e}).") from None
    out = []
    for n, counts in groups:
        used = np.flatnonzero(counts)
        if used.size <= 1:  # nothing coded: the histogram says it all
            out.append(np.full(n, used[0] if used.size else 0, dtype=index_dtype))
            continue
        try:
            symbols = np.asarray(coder.decode(categorical_model(counts[used]), n))
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


@dataclasses.dataclass
class _Record:
    """A tensor of the table as read: ``array`` is None for a palette-indexed one (decoded later)."""

    name: str
    code: int
    shape: Tuple[int, ...]
    size: int
    array: Optional[np.ndarray]


def _read_coding(r: _Reader) -> str:
    (coding_code,) = r.unpack("B", "coding")
    if coding_code not in CODING_NAMES:
        raise ArchiveError(f"Corrupt archive: unknown index coding {coding_code}.")
    return CODING_NAMES[coding_code]


def _read_tensor_header(r: _Reader, t: int) -> Tuple[str, int, int, Tuple[int, ...]]:
    """``(name, dtype code, kind, shape)`` of tensor record ``t``, each checked."""
    (name_len,) = r.unpack("H", f"tensor {t} name length")
    try:
        name = bytes(r.take(name_len, f"tensor {t} name")).decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveError(f"Corrupt archive: tensor {t}'s name is not UTF-8.") from None
    code, kind, ndim = r.unpack("BBB", f"tensor {name!r} header")
    if code not in DTYPES:
        raise ArchiveError(f"Corrupt archive: tensor {name!r} has unknown dtype code {code}.")
    if kind not in (RAW, INDEXED):
        raise ArchiveError(f"Corrupt archive: tensor {name!r} has unknown kind {kind}.")
    if ndim > MAX_NDIM:
        raise ArchiveError(f"Corrupt archive: tensor {name!r} has {ndim} dimensions "
                           f"(at most {MAX_NDIM}).")
    return name, code, kind, r.unpack(f"{ndim}Q", f"tensor {name!r} shape")


def _read_raw_tensor(r: _Reader, name: str, code: int, shape: Tuple[int, ...]) -> np.ndarray:
    dtype = _numpy_dtype(code)
    raw = r.take(math.prod(shape) * dtype.itemsize, f"raw tensor {name!r} ({shape}, {dtype})")
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    if dtype == np.bool_ and np.frombuffer(raw, np.uint8).max(initial=0) > 1:
        raise ArchiveError(f"Corrupt archive: bool tensor {name!r} holds bytes other than 0/1.")
    return array


def _read_tensor_table(r: _Reader, coding: str, k: int, max_elements: int) -> List[_Record]:
    """Every tensor record (raw tensors read), refusing absurd sizes before allocating."""
    (n_tensors,) = r.unpack("I", "tensor count")
    # Every tensor record needs at least 5 bytes: refuse absurd counts before looping.
    if n_tensors * 5 > r.end - r.pos:
        raise ArchiveError(f"Corrupt archive: {n_tensors} tensors cannot fit in the file.")
    records, total = [], 0
    for t in range(n_tensors):
        name, code, kind, shape = _read_tensor_header(r, t)
        size = math.prod(shape)
        total += size
        # The non-zero dims bound too: numpy refuses shapes like (0, 2**63).
        if total > max_elements or math.prod(d for d in shape if d) > max_elements:
            raise ArchiveError(
                f"Archive declares more than {max_elements} weight elements (tensor {name!r} has "
                f"shape {shape}); refusing an absurd size (raise max_elements if it is genuine).")
        if kind == RAW:
            records.append(_Record(name, code, shape, size, _read_raw_tensor(r, name, code, shape)))
            continue
        if code != FLOAT32_CODE:
            raise ArchiveError(f"Corrupt archive: indexed tensor {name!r} is not float32.")
        if coding == "none" or k == 0:
            raise ArchiveError(f"Corrupt archive: tensor {name!r} is palette-indexed but the "
                               "archive has no palette or no coded indices.")
        records.append(_Record(name, code, shape, size, None))
    return records


def _read_histograms(r: _Reader, coding: str, indexed: List[_Record], k: int,
                     max_elements: int) -> List[Tuple[int, np.ndarray]]:
    """The ``(count, histogram)`` groups of the coded stream, checked against the tensors."""
    n_models = {"none": 0, "global": 1, "per_tensor": len(indexed)}[coding]
    tables = r.varints(n_models * k, "index histograms").reshape(n_models, k)
    if tables.size and int(tables.max()) > max_elements:
        raise ArchiveError("Corrupt archive: an index histogram holds an absurd count.")
    if coding == "global":
        n = sum(rec.size for rec in indexed)
        if int(tables[0].sum()) != n:
            raise ArchiveError(f"Corrupt archive: the index histogram counts {int(tables[0].sum())} "
                               f"weights, the indexed tensors hold {n}.")
        return [(n, tables[0])]
    groups = []
    for rec, counts in zip(indexed, tables):  # per_tensor (none: no table)
        if int(counts.sum()) != rec.size:
            raise ArchiveError(
                f"Corrupt archive: the histogram of {rec.name!r} counts {int(counts.sum())} "
                f"weights, the tensor holds {rec.size}.")
        groups.append((rec.size, counts))
    return groups


def _read_stream(r: _Reader) -> np.ndarray:
    (n_words,) = r.unpack("Q", "stream length")
    if n_words > (r.end - r.pos) // 4:
        raise ArchiveError(f"Truncated or inconsistent archive: the coded stream declares {n_words} "
                           f"words, only {r.end - r.pos} bytes remain in the body.")
    return np.frombuffer(r.take(4 * n_words, "coded stream"), dtype="<u4").astype(np.uint32)


def _decode_indices(words: np.ndarray, groups, coding: str, indexed: List[_Record],
                    k: int) -> List[np.ndarray]:
    """Flat palette indices per indexed tensor, in tensor order."""
    index_dtype = np.uint8 if k <= 256 else np.uint16
    decoded = _decode_stream(words, groups, index_dtype) if groups else []
    if coding != "global":
        return decoded
    pieces, offset = [], 0
    for rec in indexed:
        pieces.append(decoded[0][offset:offset + rec.size])
        offset += rec.size
    return pieces


def _restored_tensors(records: List[_Record], decoded: List[np.ndarray], palette: np.ndarray
                      ) -> Tuple[List[ArchiveTensor], List[Tuple[str, int, Tuple[int, ...], bytes]]]:
    """The tensors (indexed ones looked up bit-exactly in the palette) and their digest rows."""
    palette_bits = palette.view(np.uint32)
    tensors, digest_rows, it = [], [], iter(decoded)
    for rec in records:
        array, indices = rec.array, None
        if array is None:
            idx = next(it)
            indices = idx.reshape(rec.shape)
            array = palette_bits[idx].view(np.float32).reshape(rec.shape)
        tensors.append(ArchiveTensor(rec.name, array, indices))
        digest_rows.append((rec.name, rec.code, tuple(rec.shape), le_bytes(array)))
    return tensors, digest_rows


def _decode(data: memoryview, max_elements: int) -> ArchiveContents:
    body_len = _read_prologue(data)
    r = _Reader(data, PROLOGUE.size, PROLOGUE.size + body_len)
    config = _read_config(r)
    palette = _read_palette(r)
    coding = _read_coding(r)
    records = _read_tensor_table(r, coding, palette.size, max_elements)
    indexed = [rec for rec in records if rec.array is None]
    if coding != "none" and not indexed:
        raise ArchiveError(f"Corrupt archive: coding {coding!r} but no palette-indexed tensor.")
    groups = _read_histograms(r, coding, indexed, palette.size, max_elements)
    words = _read_stream(r)
    digest = bytes(r.take(DIGEST_BYTES, "content digest"))
    if r.pos != r.end:
        raise ArchiveError(f"Corrupt archive: {r.end - r.pos} unexpected bytes at the end of the body.")
    if coding == "none" and words.size:
        raise ArchiveError("Corrupt archive: a coded stream but no palette-indexed tensor.")
    decoded = _decode_indices(words, groups, coding, indexed, palette.size)
    tensors, digest_rows = _restored_tensors(records, decoded, palette)
    if content_digest(config, palette, digest_rows) != digest:
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


__all__ = ["decode_archive", "read_archive"]
