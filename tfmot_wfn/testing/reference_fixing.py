"""Slow, obviously-correct reference implementations the fast code must equal.

Dense (weights x candidates) matrices and plain loops, straight from the
algorithm's description. Only for the tests and the benchmarks: O(N*K) memory.
"""

from __future__ import annotations

import math

import numpy as np

from tfmot_wfn.core.candidates import candidate_centres
from tfmot_wfn.core.powers_of_two import ZERO_DISTANCE


def power_of_two_scalar(v: float, floor_exponent: float) -> float:
    if v == 0:
        return 0.0
    e = max(floor_exponent, float(np.round(math.log2(abs(v)))))
    return math.copysign(2.0**e, v)


def additive_powers_of_two_scalar(v: float, distance: float, order: int, g0: float = ZERO_DISTANCE) -> float:
    floor = math.floor(math.log2(g0)) - order - 1  # an integer exponent: terms are powers of two
    current = 0.0 if abs(v) < g0 else power_of_two_scalar(v, floor)
    for _ in range(order):
        residual = v - current
        if abs(residual) >= abs(distance * v) and current != 0:
            current += power_of_two_scalar(residual, floor)
    return current


def reference_stage(weights, fixed, fraction, distance, g0=ZERO_DISTANCE, palette=None,
                    distance_cap=3.0, nearest_only=True, max_move=None, zero_order="index"):
    """The fixing stage by dense matrices; returns (values, fixed_mask).

    `distance_cap`: no weight farther than ``distance_cap * a`` from the centre is
    fixed to it (None: no bound). `nearest_only`: only weights whose nearest
    candidate is the chosen centre (or at distance 0 from it) may be fixed to it.
    `max_move`: the per-weight bound is ``max(a, min(distance_cap * a, max_move))``.
    `zero_order`: among weights at distance 0, ``"index"`` fixes the smallest indices
    first, ``"magnitude"`` the smallest ``|w|`` first (ties by index)."""
    w = np.asarray(weights, np.float32).ravel()
    n = w.size
    fixed = np.zeros(n, bool) if fixed is None else np.asarray(fixed, bool).ravel().copy()
    values = w.copy()
    assigned = fixed.copy()
    quota = min(n, int(n * float(fraction)))
    taken = int(fixed.sum())
    pending = {}
    for v in w[fixed]:
        if v == 0 or abs(v) >= g0:  # a nonzero value below g0 stays fixed but is no centre
            pending[float(v)] = pending.get(float(v), 0) + 1
    used = set(pending)
    if palette is not None:
        used |= {float(v) for v in np.asarray(palette, np.float32) if v == 0 or abs(v) >= g0}
    order, allowed = 0, float(distance)
    while taken < quota and ((~assigned).any() or pending):
        free = np.flatnonzero(~assigned)
        fw = w[free].astype(np.float64)
        pool = [abs(x) for x in fw] + [abs(v) for v in pending]
        cands = candidate_centres(max(pool), distance, order, g0)
        cands = np.array(sorted(set(cands.tolist()) | used), dtype=np.float32)
        c64 = cands.astype(np.float64)
        votes = np.zeros(cands.size, np.int64)
        if fw.size:
            nearest = np.argmin(np.abs(fw[:, None] - c64[None, :]), axis=1)  # first on ties
            votes += np.bincount(nearest, minlength=cands.size)
        for v, count in pending.items():
            votes[list(cands).index(np.float32(v))] += count
        j = int(np.argmax(votes))
        centre = float(cands[j])
        recaptured = pending.pop(centre, 0) > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = np.abs(fw - centre) / np.abs(fw)
        if centre == 0.0:
            dist = np.where(np.abs(fw) < g0, 0.0, dist)
        if nearest_only and fw.size:
            eligible = (nearest == j) | (dist == 0)
            free, fw, dist = free[eligible], fw[eligible], dist[eligible]
        bound = distance_cap * allowed if distance_cap is not None else np.inf
        if max_move is not None:
            bound = max(allowed, min(bound, max_move))
        if bound < np.inf:
            eligible = dist <= bound
            free, fw, dist = free[eligible], fw[eligible], dist[eligible]
        # Sort by (distance, |w| among the zero distances if asked, index).
        magnitude = np.where(dist == 0, np.abs(fw), 0.0) if zero_order == "magnitude" else np.zeros(fw.size)
        order_idx = np.lexsort((free, magnitude, dist))
        ds = dist[order_idx]
        count = 0
        nonzero_sum, nonzero_n = 0.0, 0
        running = []
        for x in ds:  # running mean of the non-zero distances, cumulated in order
            if x > 0:
                nonzero_sum += x
                nonzero_n += 1
            running.append(nonzero_sum / nonzero_n if nonzero_n else 0.0)
        ok = [i for i, m in enumerate(running) if m <= allowed]
        count = ok[-1] + 1 if ok else 0
        count = min(count, quota - taken)
        chosen = free[order_idx[:count]]
        values[chosen] = centre
        assigned[chosen] = True
        fixed[chosen] = True
        taken += count
        if count:
            used.add(centre)
        if count == 0 and not recaptured:
            order += 1
            if order > 20:
                allowed *= 2
        else:
            allowed = float(distance)
    return values, fixed
