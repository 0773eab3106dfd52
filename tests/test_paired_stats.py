"""The benchmarks' paired statistics (`benchmarks/paired_stats.py`) against slow, obvious references.

`benchmarks/frontier.py` scores the float and the compressed model on the same test
images: the drop's standard error is that of the per-image differences, and seeds
combine as independent estimates.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import paired_stats  # noqa: E402


def _paired_reference(a, b):
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    return 100 * mean, 100 * math.sqrt(var / n)


def test_paired_drop_equals_the_reference_on_random_outcomes():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 400))
        a, b = rng.random(n) < rng.random(), rng.random(n) < rng.random()
        drop, se = paired_stats.paired_drop(a, b)
        ref_drop, ref_se = _paired_reference(a, b)
        assert drop == pytest.approx(ref_drop, abs=1e-9) and se == pytest.approx(ref_se, abs=1e-9)


def test_identical_models_drop_nothing_with_no_error_and_pairing_beats_unpaired():
    same = np.array([1, 0, 1, 1, 0, 1], bool)
    assert paired_stats.paired_drop(same, same) == (0.0, 0.0)
    # The compressed model gets one more image wrong out of 1,000 and agrees on the rest:
    # the paired error is ~0.1 points, far below the unpaired binomial ~2 points.
    rng = np.random.default_rng(1)
    base = rng.random(1000) < 0.6
    worse = base.copy()
    worse[np.flatnonzero(base)[0]] = False
    drop, se = paired_stats.paired_drop(base, worse)
    assert drop == pytest.approx(0.1) and se == pytest.approx(0.1, rel=0.01)


def test_seeds_combine_as_independent_estimates():
    got = paired_stats.combine_seeds([0.5, -0.2, 0.3], [0.3, 0.4, 0.2])
    assert got["seeds"] == 3 and got["drop"] == pytest.approx(0.2)
    assert got["se"] == pytest.approx(math.sqrt(0.09 + 0.16 + 0.04) / 3)
    assert (got["min"], got["max"]) == (-0.2, 0.5)


def test_correct_vectors_survive_the_json_packing():
    rng = np.random.default_rng(2)
    for n in (1, 7, 8, 9, 1085):
        c = rng.random(n) < 0.5
        assert np.array_equal(paired_stats.unpack(paired_stats.pack(c), n), c)
