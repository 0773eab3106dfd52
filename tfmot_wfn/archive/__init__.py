"""The entropy-coded ``.wfn`` archive: one palette, ANS-coded indices, checksummed.

`wfn_format` (the file format), `wfn_encoding` / `wfn_decoding` (write / read it:
numpy + constriction, no Keras), `wfn_archive` (the Keras edge: `save_archive` /
`load_archive`) and `inspection` (a description of the contents). Public names are
re-exported by `tfmot_wfn.lite`.
"""
