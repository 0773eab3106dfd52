"""The ``.wfn`` archive format: one shared palette, ANS-coded palette indices (no Keras).

A network made by Weight Fixing Networks holds a few dozen distinct weight values
shared by every layer. This archive stores them once (the palette, float32) and
every weight tensor as palette indices, entropy coded with `constriction`'s ANS
coder under a categorical model of the indices' histogram, so the file reaches the
entropy bound ``N x H / 8`` bytes of the N indexed weights at H bits each, plus the
headers. Tensors with a value outside the palette (BatchNorm moving statistics,
weights not fixed yet, integer state) are stored raw, bit for bit. Decoding gives
back every weight bit-exactly, with the architecture (Keras JSON config stored in
the file).

This module is the format's definition (this docstring), its constants, records
and the pieces writer and reader share; `wfn_encoding` writes it, `wfn_decoding`
reads and verifies it (all numpy + constriction), and `wfn_archive` is the Keras
edge (`save_archive(model)`, `load_archive(path) -> model`).

```python
from tfmot_wfn.archive.wfn_encoding import encode_archive
from tfmot_wfn.archive.wfn_decoding import read_archive
data = encode_archive(model_json, [("dense/kernel", kernel), ...], palette)
contents = read_archive("model.wfn")          # palette, arrays, config
```

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
import struct
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

MAGIC = b"\x89WFNARC\n"
FORMAT_VERSION = 1
MAX_PALETTE = 1 << 16
MAX_NDIM = 32
MAX_CONFIG_BYTES = 1 << 28
DEFAULT_MAX_ELEMENTS = 1 << 28
SIZE_BOUND_FACTOR = 1.05  # the size report's bound: 1.05 x (N H / 8 + palette + headers)

PROLOGUE = struct.Struct("<8sHHQ")  # magic, format version, flags, body length
CHECKSUM_BYTES = 32  # the epilogue: SHA-256 of prologue + body
DIGEST_BYTES = 32  # the body's end: SHA-256 of the decoded content
CODINGS = {"none": 0, "global": 1, "per_tensor": 2}
CODING_NAMES = {v: k for k, v in CODINGS.items()}
RAW, INDEXED = 0, 1  # a tensor's kind

# dtype code -> numpy dtype name; bfloat16 needs ml_dtypes (a TensorFlow dependency).
DTYPES = {
    1: "float32", 2: "float16", 3: "float64", 4: "bfloat16", 5: "int8", 6: "uint8",
    7: "int16", 8: "uint16", 9: "int32", 10: "uint32", 11: "int64", 12: "uint64", 13: "bool",
}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
FLOAT32_CODE = 1


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


# ------------------------------------------------- shared by writer and reader
def entropy_coder():
    """The `constriction` module (imported on first use), or an ImportError saying how to get it."""
    try:
        import constriction
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The tfmot_wfn archive needs the `constriction` entropy coder: "
            "pip install 'tfmot-wfn[lite]' (or pip install constriction).") from e
    return constriction


def total_order_keys(values: np.ndarray) -> np.ndarray:
    """uint32 keys that sort float32 values in IEEE total order (-0.0 before +0.0)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))


def le_bytes(array: np.ndarray) -> bytes:
    """The array's bytes, little-endian."""
    a = np.ascontiguousarray(array)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    return a.tobytes()


def shape_bytes(shape: Tuple[int, ...]) -> bytes:
    """u8 ndim, then ndim u64 dims."""
    return struct.pack(f"<B{len(shape)}Q", len(shape), *shape)


def content_digest(config: bytes, palette: np.ndarray,
                   tensors: Sequence[Tuple[str, int, Tuple[int, ...], bytes]]) -> bytes:
    """SHA-256 of the decoded content: config, palette, each ``(name, dtype code, shape, bytes)``."""
    h = hashlib.sha256(b"tfmot_wfn archive content v1\0")
    h.update(struct.pack("<Q", len(config)))
    h.update(config)
    h.update(struct.pack("<I", palette.size))
    h.update(le_bytes(palette.astype(np.float32)))
    h.update(struct.pack("<I", len(tensors)))
    for name, code, shape, data in tensors:
        encoded = name.encode("utf-8")
        h.update(struct.pack("<HB", len(encoded), code))
        h.update(encoded)
        h.update(shape_bytes(shape))
        h.update(struct.pack("<Q", len(data)))
        h.update(data)
    return h.digest()


def categorical_model(counts_used: np.ndarray):
    """The coder's categorical model of the used palette entries' counts."""
    model = entropy_coder().stream.model
    return model.Categorical(counts_used.astype(np.float64) / float(counts_used.sum()), perfect=False)


__all__ = ["DEFAULT_MAX_ELEMENTS", "FORMAT_VERSION", "MAGIC", "MAX_PALETTE", "ArchiveContents",
           "ArchiveError", "ArchiveTensor"]
