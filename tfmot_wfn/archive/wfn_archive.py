"""The ``.wfn`` archive of a Keras model: `save_archive`, `load_archive`, `archive_size_report`.

The Keras edge of the archive: a fixed (or stripped) model goes in as its JSON
config and ``(variable path, array)`` weights, and comes back out rebuilt with
every weight bit-exact. The file format itself (palette, ANS-coded indices,
checksums) is `wfn_format`, written by `wfn_encoding` and read by `wfn_decoding`
(numpy + constriction only); their public names are re-exported here.

```python
from tfmot_wfn.archive.wfn_archive import save_archive, load_archive
stats = save_archive(fixed_or_stripped_model, "model.wfn")
model = load_archive("model.wfn")            # Keras model, weights bit-exact
```
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from tfmot_wfn.archive.wfn_decoding import decode_archive, read_archive  # noqa: F401 (re-exported)
from tfmot_wfn.archive.wfn_encoding import (  # noqa: F401 (re-exported)
    SizeReport, encode_archive, encode_archive_with_sizes,
)
from tfmot_wfn.archive.wfn_format import (  # noqa: F401 (re-exported)
    DEFAULT_MAX_ELEMENTS, FORMAT_VERSION, MAGIC, MAX_PALETTE, ArchiveContents, ArchiveError,
    ArchiveTensor,
)
from tfmot_wfn.keras import report
from tfmot_wfn.keras.compat import keras, numpy_dtype, variable_path
from tfmot_wfn.keras.fix import strip_fixing
from tfmot_wfn.keras.network import wrappers_of
from tfmot_wfn.utils.atomic_files import write_bytes_atomically


def _plain_model_and_palette(model, palette=None):
    """(plain model, palette): a fix_weights model is stripped; its palette is its fixed values."""
    wrapped = bool(wrappers_of(model))
    if palette is None:
        try:
            palette = report.palette(model)
        except ValueError:  # no fixable weight at all: everything raw
            palette = np.zeros(0, np.float32)
    plain = strip_fixing(model) if wrapped else model
    return plain, np.asarray(palette, dtype=np.float32)


def _model_archive(model, palette=None, coding: str = "auto") -> Tuple[bytes, SizeReport]:
    """The archive bytes of ``model`` and their sizes."""
    plain, pal = _plain_model_and_palette(model, palette)
    try:
        config = plain.to_json()
    except NotImplementedError as e:
        raise ValueError(
            f"save_archive needs a Functional or Sequential model whose architecture serialises "
            f"with model.to_json(); {type(plain).__name__} does not ({e}).") from None
    weights = [(variable_path(v), np.asarray(v.numpy())) for v in plain.weights]
    return encode_archive_with_sizes(config, weights, pal, coding)


def save_archive(model, path, palette=None, coding: str = "auto") -> SizeReport:
    """Write the entropy-coded archive of a fixed model; returns `archive_size_report`'s dict.

    Args:
      model: a model made by `tfmot_wfn.fix_weights` (it is stripped first; its
        palette is the values of its fixed weights) or a plain Keras model such as
        `tfmot_wfn.strip_fixing`'s result (its palette is the distinct values of its
        kernels, biases and normalization gamma/beta).
      path: the file to write (written atomically: a temporary file, then renamed).
      palette: override the palette (e.g. `tfmot_wfn.palette(fixed)` taken before
        stripping a partly fixed model, whose free weights then stay raw).
      coding: "auto", "global" or "per_tensor" (see `wfn_format`).

    A model of more than 2**28 weights is written, but reading it back needs
    ``load_archive(path, max_elements=...)`` (the reader's guard against absurd sizes).
    """
    data, sizes = _model_archive(model, palette, coding)
    write_bytes_atomically(path, data)
    return sizes


def archive_size_report(model, palette=None, coding: str = "auto") -> SizeReport:
    """Sizes of the model's archive (built in memory) against the entropy bound.

    Keys: ``indexed_weights`` (N, the palette-indexed weights),
    ``entropy_bits_per_weight`` (H, their empirical entropy in bits,
    `tfmot_wfn.core.entropy_bits`), ``ideal_index_bytes`` (N H / 8), ``palette_bytes``,
    ``header_bytes`` (everything but the coded indices and the palette: prologue,
    config, tensor table, histograms, raw tensors, digests), ``bound_bytes``
    (1.05 x (N H / 8 + palette + headers)), ``archive_bytes``, ``within_bound``,
    ``stream_bytes`` (the coded indices alone) and ``stream_to_ideal`` (their ratio to
    N H / 8), plus a breakdown (coding, model/config/table/raw bytes, tensor counts).
    The keys ``"N"`` and ``"H"`` of tfmot_wfn 0.1 still read, with a DeprecationWarning.
    """
    return _model_archive(model, palette, coding)[1]


def load_archive(path, custom_objects=None, max_elements: int = DEFAULT_MAX_ELEMENTS):
    """Rebuild the Keras model stored in an archive, its weights restored bit-exactly."""
    contents = read_archive(path, max_elements=max_elements)
    try:
        model = keras.models.model_from_json(contents.config, custom_objects=custom_objects)
    except Exception as e:
        raise ArchiveError(f"The archive's architecture cannot be rebuilt by Keras: {e}") from e
    _check_fit(model.weights, contents)
    for v, t in zip(model.weights, contents.tensors):
        v.assign(t.array)
    return model


def _check_fit(variables, contents: ArchiveContents) -> None:
    """The rebuilt model's variables take the archive's tensors, one by one, in order."""
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


__all__ = ["archive_size_report", "load_archive", "save_archive"]
