"""An inference-mode BatchNormalization as the per-channel affine map ``y = x * scale + shift``.

``scale = gamma / sqrt(moving_variance + epsilon)`` and
``shift = beta - moving_mean * scale``. BatchNorm folding, freezing and the
palette export all use these two formulas; they live here once, in numpy.

```python
scale, shift = batchnorm_scale_shift(gamma, beta, mean, variance, 1e-3)   # float64
tf_scale = float32_batchnorm_scale(gamma32, variance32, 1e-3)            # as TF rounds it
```
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def batchnorm_scale_shift(gamma, beta, mean, variance, epsilon: float
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)`` in float64: ``y = x * scale + shift`` per channel.

    >>> batchnorm_scale_shift([2.0], [1.0], [0.5], [3.0], 1.0)
    (array([1.]), array([0.5]))
    """
    gamma, beta, mean, variance = (np.asarray(v, np.float64) for v in (gamma, beta, mean, variance))
    scale = gamma / np.sqrt(variance + float(epsilon))
    return scale, beta - mean * scale


def float32_batchnorm_scale(gamma, variance, epsilon: float) -> np.ndarray:
    """``gamma * rsqrt(variance + epsilon)`` in float32, rounded step by step as TensorFlow does.

    The TFLite converter folds this float32 scale into the layer before the
    BatchNorm; a zero variance and epsilon give ``inf`` (no warning).
    """
    gamma, variance = np.asarray(gamma, np.float32), np.asarray(variance, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        rsqrt = (np.float32(1) / np.sqrt(variance + np.float32(epsilon))).astype(np.float32)
    return (gamma * rsqrt).astype(np.float32)


__all__ = ["batchnorm_scale_shift", "float32_batchnorm_scale"]
