"""One whole-network fixing stage: the greedy assignment of weights to centres.

Pure numpy. This is the fast implementation: O(N log N) per stage (one sort of
the free weights), no (weights x candidates) matrix. `tfmot_wfn/testing/reference_fixing.py`
holds the slow dense version it must equal.

Semantics of a stage (see ``docs/algorithm.md`` and the paper):

* Quota ``Q = int(N * fraction)``. Weights fixed in earlier stages stay fixed at
  their value and count toward the quota; they still "vote" for their centre,
  as in the reference, until that centre is chosen once in this stage.
* Each greedy step builds the candidate centres (`candidate_centres` of the
  still-unassigned range at the current `order`, plus every centre already in
  the palette), lets every unassigned weight vote for its absolute-nearest
  candidate (ties to the smaller candidate) and picks the candidate with the
  most votes (ties to the smaller candidate).
* Relative distance to the chosen centre ``c``: ``D = |w - c| / |w|``; weights
  with ``|w| < zero_distance`` are at distance 0 from the centre 0. The
  unassigned weights that voted for ``c`` (or are at distance 0 from it) with
  ``D <= distance_cap * a`` (and, with `max_move`, ``D <= max(a, min(distance_cap * a,
  max_move))``), sorted by ``(D, index)``; the longest prefix whose
  running mean of non-zero distances is ``<= a`` is fixed to ``c``, capped at
  the quota. When more weights sit at distance 0 than the quota leaves room
  for (the weights below ``zero_distance`` in an early stage), ``zero_order``
  picks which: ``"index"`` (default) the smallest flat indices, i.e. the
  earliest layers' weights first; ``"magnitude"`` the smallest ``|w|`` first
  (ties by index), across all layers.
* Nothing fixed: ``order += 1``; past order 20 ``a`` doubles on every further
  failure and resets to the stage's distance after a success.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np

from tfmot_wfn.core.candidates import candidate_centres
from tfmot_wfn.core.powers_of_two import ZERO_DISTANCE
from tfmot_wfn.core.value_sort import sort_by_value
from tfmot_wfn.utils.finite import count_nonfinite

#: Default `distance_cap`: no weight is fixed farther than 3x the stage's allowed distance.
DISTANCE_CAP = 3.0
#: `max_move` of the "bounded" rule: every weight is within 1/3 (relative) of its nearest
#: power of two (at 1.5 * 2^k), so a move of at most 1/3 is one that rounding to a power of
#: two could make anyway.
MAX_MOVE = 1.0 / 3.0
#: `zero_order` values: which of the weights at distance 0 are fixed first when the quota cuts them.
ZERO_ORDERS = ("index", "magnitude")
#: After this many orders without success the allowed distance starts doubling.
ORDER_BEFORE_DOUBLING = 20

_BLOCK = 4096


@dataclasses.dataclass
class StageResult:
    """Outcome of one fixing stage.

    Attributes:
      values: float32 weights, fixed entries set exactly to their centre.
      fixed: bool mask of fixed entries (a superset of the input mask).
      palette: sorted unique float32 values of all fixed entries.
      steps: greedy steps taken.
      max_order: highest power-of-two order reached.
      newly_fixed: number of weights fixed in this stage.
    """

    values: np.ndarray
    fixed: np.ndarray
    palette: np.ndarray
    steps: int
    max_order: int
    newly_fixed: int


def quota_for(n: int, fraction: float) -> int:
    """Number of weights that must be fixed after a stage at `fraction`."""
    return min(n, int(n * float(fraction)))


def relative_distance(w: np.ndarray, centre: float, zero_distance: float = ZERO_DISTANCE) -> np.ndarray:
    """``|w - c| / |w|`` in float64, with distance 0 from 0 for ``|w| < zero_distance``."""
    w = np.asarray(w, dtype=np.float64)
    c = float(centre)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.abs(w - c) / np.abs(w)
    if c == 0.0:
        d = np.where(np.abs(w) < zero_distance, 0.0, d)
    return d


def accepted_count(sorted_distances: np.ndarray, allowed: float) -> int:
    """Length of the accepted prefix of ascending distances.

    One past the last position whose running mean of the non-zero distances so
    far is <= `allowed` (positions with no non-zero distance yet always pass).
    """
    d = np.asarray(sorted_distances, dtype=np.float64)
    if d.size == 0:
        return 0
    nonzero = d > 0
    zeros = int(np.count_nonzero(~nonzero))  # zeros come first in ascending order
    rest = d[zeros:]
    if rest.size == 0:
        return zeros
    with np.errstate(invalid="ignore", over="ignore"):
        means = np.cumsum(rest) / np.arange(1, rest.size + 1)
    ok = np.flatnonzero(means <= allowed)
    return zeros + (int(ok[-1]) + 1 if ok.size else 0)


class _SortedPool:
    """The unassigned free weights, sorted by value, with O(1) removal.

    Removed entries are flagged dead; alive counts per block of positions keep
    range counts cheap without re-compacting the array.
    """

    def __init__(self, values: np.ndarray, indices: np.ndarray, zero_order: str = "index"):
        self.s = values  # float32, ascending
        self.idx = indices  # original flat index of each sorted entry
        self.size = values.size
        self.alive = np.ones(self.size, dtype=bool)
        nblocks = -(-self.size // _BLOCK) if self.size else 0
        self.block_alive = np.full(nblocks, _BLOCK, dtype=np.int64)
        if nblocks:
            self.block_alive[-1] = self.size - (nblocks - 1) * _BLOCK
        self.n_alive = self.size
        self.first = 0
        self.last = self.size - 1
        self.zero_order = zero_order  # see `_first_by_zero_order`

    def max_abs(self) -> float:
        if self.n_alive == 0:
            return 0.0
        return max(abs(float(self.s[self.first])), abs(float(self.s[self.last])))

    def _count_before(self, positions: np.ndarray) -> np.ndarray:
        """Alive entries strictly before each position."""
        if self.n_alive == self.size:
            return positions.astype(np.int64)
        cum = np.concatenate([[0], np.cumsum(self.block_alive)])
        blocks = positions // _BLOCK
        out = cum[blocks]
        for i, (p, b) in enumerate(zip(positions.tolist(), blocks.tolist())):
            start = b * _BLOCK
            if p > start:
                out[i] += np.count_nonzero(self.alive[start:p])
        return out

    def votes(self, centres: np.ndarray):
        """How many alive weights have each centre as their nearest (ties: lower centre),
        and the cell bounds: the weights voting for ``centres[j]`` sit at sorted
        positions ``bounds[j]:bounds[j + 1]``."""
        k = centres.size
        if self.n_alive == 0 or k == 0:
            return np.zeros(k, dtype=np.int64), np.zeros(k + 1, dtype=np.int64)
        c = centres.astype(np.float64)
        lower, upper = c[:-1], c[1:]
        # First sorted position strictly closer to the upper centre, searched only
        # between the two centres, where the exact float64 predicate
        # |w - upper| < |w - lower| is monotone in w: all boundaries at once.
        s = self.s
        lo = np.searchsorted(s, centres[:-1], side="left").astype(np.int64)
        hi = np.searchsorted(s, centres[1:], side="right").astype(np.int64)
        while True:
            active = lo < hi
            if not active.any():
                break
            mid = (lo + hi) // 2
            v = s[np.minimum(mid, self.size - 1)].astype(np.float64)
            closer_up = np.abs(v - upper) < np.abs(v - lower)
            hi = np.where(active & closer_up, mid, hi)
            lo = np.where(active & ~closer_up, mid + 1, lo)
        bounds = np.concatenate([[0], lo, [self.size]])
        before = self._count_before(bounds)
        return np.diff(before), bounds

    def alive_positions(self, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        stop = self.size if stop is None else stop
        return start + np.flatnonzero(self.alive[start:stop])

    def remove(self, positions: np.ndarray) -> None:
        if positions.size == 0:
            return
        self.alive[positions] = False
        self.block_alive -= np.bincount(positions // _BLOCK, minlength=self.block_alive.size)
        self.n_alive -= positions.size
        if self.n_alive == 0:
            return
        if not self.alive[self.first]:
            self.first = self._scan(self.first, forward=True)
        if not self.alive[self.last]:
            self.last = self._scan(self.last, forward=False)

    def _scan(self, pos: int, forward: bool) -> int:
        b = pos // _BLOCK
        if forward:
            nz = np.flatnonzero(self.block_alive[b:])
            b = b + int(nz[0])
            return b * _BLOCK + int(np.argmax(self.alive[b * _BLOCK:(b + 1) * _BLOCK]))
        nz = np.flatnonzero(self.block_alive[: b + 1])
        b = int(nz[-1])
        block = self.alive[b * _BLOCK:(b + 1) * _BLOCK]
        return b * _BLOCK + block.size - 1 - int(np.argmax(block[::-1]))

    def window(self, centre: float, limit: float, zero_distance: float):
        """Alive positions holding every weight within relative distance `limit`
        of `centre`, and a lower bound on the distance of every alive weight
        outside them. None if that set is not one value interval (limit >= 1)."""
        c = float(centre)
        if c == 0.0:
            # |w| < g0 are at distance 0; every other weight is at distance >= 1.
            bound = np.float32(zero_distance * (1 + 1e-6))
            lo = np.searchsorted(self.s, -bound, side="left")
            hi = np.searchsorted(self.s, bound, side="right")
            positions = self.alive_positions(int(lo), int(hi))
            return positions[np.abs(self.s[positions].astype(np.float64)) < zero_distance], 1.0
        if limit >= 1.0:
            return None
        a, b = c / (1.0 + limit), c / (1.0 - limit)
        low, high = (a, b) if c > 0 else (b, a)
        # Loose float32 bounds (the needle must share the array's dtype, or numpy
        # copies the whole array), then the exact filter.
        lo = np.searchsorted(self.s, np.float32(low - abs(low) * 1e-6), side="left")
        hi = np.searchsorted(self.s, np.float32(high + abs(high) * 1e-6), side="right")
        positions = self.alive_positions(int(lo), int(hi))
        if positions.size:
            d = relative_distance(self.s[positions], c, zero_distance)
            positions = positions[d <= limit]
        return positions, limit


def _take(pool: _SortedPool, centre: float, allowed: float, room: int, zero_distance: float,
          cell: Optional[Tuple[int, int]] = None, cap: float = np.inf) -> np.ndarray:
    """Sorted-pool positions the greedy step fixes to `centre` (at most `room`).

    Eligible: weights at relative distance <= `cap` from the centre and, with
    `cell` (sorted positions ``start, stop`` of the weights whose nearest
    candidate is `centre`), only those, plus the ones at distance 0. Without
    `cell` the step looks at a value window around the centre and widens it while
    the accepted prefix could still run past its edge.
    """
    if room <= 0 or pool.n_alive == 0:
        return np.zeros(0, dtype=np.int64)
    limit = max(3.0 * allowed, 1e-6)
    scan_all = False
    while True:
        if cell is not None:
            positions, outside = pool.alive_positions(*cell), np.inf
            if centre == 0.0:  # |w| < g0 are at distance 0 from 0 wherever they vote
                small = pool.window(0.0, limit, zero_distance)[0]
                positions = _union_of_positions(positions, small)
            complete = True
        else:
            found = None if scan_all else pool.window(centre, limit, zero_distance)
            if found is None:
                positions, outside = pool.alive_positions(), np.inf
            else:
                positions, outside = found
            # Nothing outside the window is eligible once it is all beyond the cap.
            complete = positions.size == pool.n_alive or outside > cap
        d = relative_distance(pool.s[positions], centre, zero_distance)
        if cap < np.inf:
            keep = d <= cap
            positions, d = positions[keep], d[keep]
        zero = d == 0
        zeros = positions[zero]
        if zeros.size >= room:
            # The cap falls among the zero distances: `pool.zero_order` picks which.
            return _first_by_zero_order(pool, zeros, room) if zeros.size > room else zeros
        rest, d_rest = positions[~zero], d[~zero]
        d_sorted = np.sort(d_rest)
        n = accepted_count(d_sorted, allowed)
        if n == rest.size and not complete and zeros.size + n < room:
            # Every weight in the window passed; one outside is at distance > outside.
            total = float(np.cumsum(d_sorted)[-1]) if rest.size else 0.0
            if (total + outside) / (rest.size + 1) <= allowed:
                limit *= 4.0
                scan_all = centre == 0.0 or limit >= 1.0
                continue
        n = min(n, room - zeros.size)
        return np.concatenate([zeros, _smallest(rest, d_rest, d_sorted, n, pool.idx)])


def _union_of_positions(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.union1d(a, b)`` of two increasing arrays of distinct pool positions, by marking
    them in one boolean array over their span (``np.union1d`` concatenates and runs
    ``np.unique``, seconds on the millions of positions that vote for 0 at ResNet-50 size)."""
    if a.size == 0 or b.size == 0:
        return (b if a.size == 0 else a).astype(np.int64)
    low = int(min(a[0], b[0]))
    marked = np.zeros(int(max(a[-1], b[-1])) - low + 1, dtype=bool)
    marked[a - low] = True
    marked[b - low] = True
    return low + np.flatnonzero(marked)


def _first_by_zero_order(pool: _SortedPool, zeros: np.ndarray, room: int) -> np.ndarray:
    """`room` of the sorted-pool positions `zeros` (all at distance 0), unordered:
    the smallest original indices, or with ``pool.zero_order == "magnitude"`` the
    smallest ``|w|`` (ties: smallest index). Sorts only `zeros`."""
    if pool.zero_order == "magnitude":
        order = np.lexsort((pool.idx[zeros], np.abs(pool.s[zeros].astype(np.float64))))
        return zeros[order[:room]]
    return zeros[np.argpartition(pool.idx[zeros], room - 1)[:room]]


def _smallest(positions: np.ndarray, d: np.ndarray, d_sorted: np.ndarray, n: int, idx: np.ndarray) -> np.ndarray:
    """The first `n` of `positions` in (distance, original index) order, unordered."""
    if n <= 0:
        return positions[:0]
    if n >= positions.size:
        return positions
    cut = d_sorted[n - 1]
    below = positions[d < cut]
    ties = positions[d == cut]
    need = n - below.size
    if need < ties.size:
        ties = ties[np.argpartition(idx[ties], need - 1)[:need]]
    return np.concatenate([below, ties])


def _checked_inputs(weights, fixed, fraction, distance, distance_cap,
                    max_move=None) -> Tuple[np.ndarray, np.ndarray]:
    """``(weights as flat float32, fixed mask as flat bool)``; ValueError on a bad argument."""
    w = np.asarray(weights, dtype=np.float32).ravel()
    if fixed is None:
        fixed_in = np.zeros(w.size, dtype=bool)
    else:
        fixed_in = np.asarray(fixed, dtype=bool).ravel()
        if fixed_in.size != w.size:
            raise ValueError(f"fixed mask has {fixed_in.size} entries, weights have {w.size}")
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if not float(distance) > 0:
        raise ValueError(f"distance must be > 0, got {distance!r}")
    if distance_cap is not None and not float(distance_cap) > 0:
        raise ValueError(f"distance_cap must be > 0 or None, got {distance_cap!r}")
    if max_move is not None and not float(max_move) > 0:
        raise ValueError(f"max_move must be > 0 or None, got {max_move!r}")
    bad = count_nonfinite(w)
    if bad:
        raise ValueError(f"{bad} weights are NaN or Inf; fixing needs finite weights")
    return w, fixed_in


def check_zero_order(zero_order) -> str:
    """`zero_order` itself if it is one of `ZERO_ORDERS`; ValueError/TypeError otherwise."""
    if not isinstance(zero_order, str):
        raise TypeError(f"zero_order must be a str, one of {ZERO_ORDERS}, got "
                        f"{type(zero_order).__name__} {zero_order!r}")
    if zero_order not in ZERO_ORDERS:
        raise ValueError(f"zero_order must be one of {ZERO_ORDERS} (\"index\": the earliest weights "
                         f"first, as before; \"magnitude\": the smallest |w| first), got {zero_order!r}")
    return zero_order


def _known_centres(w: np.ndarray, fixed_in: np.ndarray, palette, zero_distance: float):
    """``(pending, used)``: each earlier-fixed value with its count (re-captured first, at
    distance 0), and every centre to offer besides the grid (those and the palette)."""
    locked_values, locked_counts = np.unique(w[fixed_in], return_counts=True)
    # Earlier-fixed values below g0 but not 0 (only a caller's own masks hold them) stay
    # fixed but are not offered either: next to 0 they are no centre of their own (a free
    # weight's distances to both tie in float64).
    pending: Dict[float, int] = {float(v): int(c) for v, c in zip(locked_values, locked_counts)
                                 if v == 0 or abs(v) >= zero_distance}
    used = set(pending)
    if palette is not None:
        # A nonzero centre below g0 is never offered: such magnitudes are pruned to 0.
        used.update(float(v) for v in np.asarray(palette, dtype=np.float32).ravel()
                    if v == 0 or abs(v) >= zero_distance)
    return pending, used


def _free_pool(w: np.ndarray, fixed_in: np.ndarray, zero_order: str) -> "_SortedPool":
    """The free weights sorted by value, ties by index (one sort: `sort_by_value`), as a
    `_SortedPool`."""
    index_type = np.int32 if w.size < 2**31 else np.int64
    if not fixed_in.any():
        values, sorted_idx = sort_by_value(w, index_dtype=index_type)
    else:
        free = np.flatnonzero(~fixed_in).astype(index_type)
        values, sorted_idx = sort_by_value(w[free], free)
    return _SortedPool(values, sorted_idx, zero_order)


def fixing_stage(
    weights: np.ndarray,
    fixed: Optional[np.ndarray],
    fraction: float,
    distance: float,
    zero_distance: float = ZERO_DISTANCE,
    palette: Optional[np.ndarray] = None,
    distance_cap: Optional[float] = DISTANCE_CAP,
    nearest_only: bool = True,
    max_move: Optional[float] = None,
    zero_order: str = "index",
) -> StageResult:
    """Fix the weights of one stage, network-wide.

    Args:
      weights: 1-D float array of every fixable weight of the network. Entries
        already fixed must hold their fixed value.
      fixed: bool mask of the entries fixed in earlier stages (None: nothing).
      fraction: cumulative fraction of all weights fixed after this stage, in (0, 1].
      distance: the stage's allowed mean relative distance ``a`` (> 0).
      zero_distance: magnitudes below it are pruned to the centre 0.
      palette: extra centres to offer as candidates (e.g. centres used before);
        nonzero values below `zero_distance` are not offered (they would be 0).
      distance_cap: a greedy step fixes no weight farther than ``distance_cap * a``
        from the chosen centre (relative distance; the MEAN over the accepted
        weights is still bounded by ``a``). None: no per-weight bound.
      nearest_only: only weights whose nearest candidate is the chosen centre
        (and those at distance 0 from it) are eligible, so every weight lands on
        its nearest candidate. False: any unassigned weight, as the algorithm
        text reads; then a centre with many very close weights (BatchNorm gammas
        at 1.0) drags far ones onto it (measured on MobileNetV2: weights of 0.31
        fixed to 1.0), and popular centres pull whole ranges of weights one way.
        ``nearest_only=False, distance_cap=None`` is the text's rule exactly. These
        defaults are the "nearest_capped" rule; `fix_weights` passes its rule's options
        (`tfmot_wfn.core.fixing_rules`).
      max_move: a relative move no per-weight bound may exceed, whatever ``a``: the
        bound becomes ``max(a, min(distance_cap * a, max_move))`` (never below ``a``, so
        it cannot stop a step that the mean alone would let through: the first weight
        of an accepted prefix is within ``a``). None: ``distance_cap * a`` alone.
      zero_order: which weights at distance 0 from the chosen centre are fixed
        first when there are more of them than the quota leaves room for (in
        practice: the weights below `zero_distance`, pruned to 0 in an early
        stage). ``"index"``: the smallest flat indices, so the earliest layers'
        weights are pruned first (tfmot_wfn 0.1). ``"magnitude"``: the smallest
        ``|w|`` first across all layers (ties: smallest index). Costs one sort
        of those weights. Nothing else depends on it.

    Returns:
      A `StageResult`. Inputs are not modified.
    """
    w, fixed_in = _checked_inputs(weights, fixed, fraction, distance, distance_cap, max_move)
    check_zero_order(zero_order)
    n = w.size
    values = w.copy()
    out_fixed = fixed_in.copy()
    quota = quota_for(n, fraction)
    pending, used = _known_centres(w, fixed_in, palette, zero_distance)
    taken = int(np.count_nonzero(fixed_in))
    newly = 0
    pool = _free_pool(w, fixed_in, zero_order)

    order, allowed, steps, max_order = 0, float(distance), 0, 0
    while taken < quota and (pool.n_alive or pending):
        steps += 1
        max_abs = max([pool.max_abs()] + [abs(v) for v in pending])
        centres = candidate_centres(max_abs, distance, order, zero_distance)
        if used:
            centres = np.union1d(centres, np.fromiter(used, np.float32, len(used)))
        votes, bounds = pool.votes(centres)
        for v, count in pending.items():
            votes[np.searchsorted(centres, np.float32(v))] += count
        j = int(np.argmax(votes))
        centre = float(centres[j])
        recaptured = pending.pop(centre, 0) > 0
        cell = (int(bounds[j]), int(bounds[j + 1])) if nearest_only else None
        cap = distance_cap * allowed if distance_cap is not None else np.inf
        if max_move is not None:
            cap = max(allowed, min(cap, float(max_move)))
        positions = _take(pool, centre, allowed, quota - taken, zero_distance, cell, cap)
        if positions.size:
            idx = pool.idx[positions]
            values[idx] = centre
            out_fixed[idx] = True
            pool.remove(positions)
            taken += positions.size
            newly += positions.size
            used.add(centre)
        if positions.size == 0 and not recaptured:
            order += 1
            max_order = max(max_order, order)
            if order > ORDER_BEFORE_DOUBLING:
                allowed *= 2.0
        else:
            allowed = float(distance)

    palette_out = np.unique(values[out_fixed]).astype(np.float32)
    return StageResult(values, out_fixed, palette_out, steps, max_order, newly)
