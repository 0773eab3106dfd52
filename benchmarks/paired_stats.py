"""Paired accuracy statistics of the benchmarks (numpy only, importable under tf_keras too).

The float and the compressed model are scored on the SAME test images: the drop's standard
error is that of the per-image differences (much smaller than the unpaired binomial error
when the two models agree on most images), and seeds combine as independent estimates.

```python
drop, se = paired_drop(correct_float, correct_fixed)      # points, points
combine_seeds([0.5, -0.2], [0.3, 0.4])                     # mean drop, its error, range
```
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from tfmot_wfn.core.paired_accuracy import paired_drop_se

#: A row is lossless when its mean drop over the seeds is at most this many points.
LOSSLESS_POINTS = 0.5


def paired_drop(correct_float: np.ndarray, correct_row: np.ndarray):
    """(drop in points, its paired standard error in points) on the same test images."""
    d = correct_float.astype(np.float64) - correct_row.astype(np.float64)
    return 100.0 * float(d.mean()), 100.0 * paired_drop_se(correct_float, correct_row)


def combine_seeds(drops: List[float], errors: List[float]) -> Dict:
    """Mean drop over seeds, its standard error (independent seeds), the seeds' min and max."""
    s = len(drops)
    return {"seeds": s, "drop": float(np.mean(drops)),
            "se": float(np.sqrt(np.sum(np.square(errors))) / s),
            "min": float(np.min(drops)), "max": float(np.max(drops))}


def pack(correct: np.ndarray) -> str:
    """Which test images a model got right, as hex (for a JSON file)."""
    return np.packbits(correct.astype(np.uint8)).tobytes().hex()


def unpack(text: str, n: int) -> np.ndarray:
    """The inverse of `pack` for ``n`` test images."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))[:n].astype(bool)
