"""The entropy-coded ``.wfn`` archive: one palette, ANS-coded indices, checksummed.

`wfn_format` (the file format: numpy + constriction, no Keras), `wfn_archive` (the
Keras edge: `save_archive` / `load_archive`) and `inspection` (a size report). Public
names are re-exported by `tfmot_wfn.lite`.
"""
