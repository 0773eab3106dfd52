"""The entropy-coded ``.wfn`` archive: one palette, ANS-coded indices, checksummed.

`wfn_archive` (the format and `save_archive` / `load_archive`; Keras only at its
edge) and `inspection` (a size report). Public names are re-exported by `tfmot_wfn.lite`.
"""
