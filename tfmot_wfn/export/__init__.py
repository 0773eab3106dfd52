"""Keras model -> palette TFLite file.

`conversion` (Keras -> float TFLite), `batchnorm_mul` (keep converter-folded
BatchNorm scales as ``MUL`` ops so kernels stay palette values),
`tensor_reasons` (why a tensor is not palette-indexed, said in Keras terms) and
`palette_export` (`export_tflite`). Public names are re-exported by `tfmot_wfn.lite`.
"""
