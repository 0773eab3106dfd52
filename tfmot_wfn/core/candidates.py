"""Candidate cluster centres for one greedy fixing step (pure numpy)."""

from __future__ import annotations

import math

import numpy as np

from tfmot_wfn.core.powers_of_two import ZERO_DISTANCE, additive_powers_of_two

#: The geometric grid's relative step is capped here so that (1+d)/(1-d) stays finite.
MAX_GRID_DISTANCE = 0.9999


def geometric_grid(max_abs: float, distance: float, zero_distance: float = ZERO_DISTANCE) -> np.ndarray:
    """`g0 * r**j` for j = 0, 1, ... up to the first value >= `max_abs`, r = (1+d)/(1-d).

    Every magnitude in [g0, max_abs] lies within relative distance d of a grid
    point (d = min(distance, 0.9999)). Always holds at least g0.
    """
    d = min(float(distance), MAX_GRID_DISTANCE)
    if d <= 0:
        raise ValueError(f"distance must be > 0, got {distance!r}")
    ratio = (1.0 + d) / (1.0 - d)
    if not max_abs > zero_distance:
        return np.array([zero_distance])
    n = int(math.ceil(math.log(max_abs / zero_distance) / math.log(ratio)))
    grid = zero_distance * ratio ** np.arange(n + 2, dtype=np.float64)
    # Keep the points below max_abs and the first one at or above it.
    last = int(np.searchsorted(grid, max_abs, side="left"))
    return grid[: last + 1]


def candidate_centres(
    max_abs: float,
    distance: float,
    order: int,
    zero_distance: float = ZERO_DISTANCE,
) -> np.ndarray:
    """Sorted float32 candidate centres: 0 and +-(sums of <= order+1 powers of two).

    Built as in the paper: a geometric grid from `zero_distance` to `max_abs`,
    each point mapped to its additive power-of-two approximation of `order`,
    made unique, mirrored to the negatives, with 0 included.
    """
    grid = geometric_grid(max_abs, distance, zero_distance)
    positive = additive_powers_of_two(grid, distance, order, zero_distance)
    positive = np.unique(positive.astype(np.float32))
    positive = positive[positive > 0]
    return np.concatenate([-positive[::-1], np.zeros(1, np.float32), positive])
