"""The palette TFLite format on the flatbuffer: read/write, encode/decode, inspect, run.

No Keras import here: `flatbuffer` (schema object API I/O), `palette_format`
(names and metadata), `compaction` (short names, flattening), `palette_encoding`
/ `palette_decoding` (the rewrites), `exact_weights` (exact int8 / float16
weights behind DEQUANTIZE), `scale_ops` (BatchNorm scales kept as ``MUL``),
`inspection`, `runtime` (LiteRT / TensorFlow interpreters) and `latency`. The public
entry points are re-exported by `tfmot_wfn.lite`.
"""
