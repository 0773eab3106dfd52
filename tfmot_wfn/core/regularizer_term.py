"""The regulariser's per-weight term as a function of one weight, and its lookup table.

For a palette ``c`` (the centres chosen so far) the regulariser's term of a free
weight ``w`` is

    f(w) = sum_k softmin_k(d_k / tau) d_k,
    d_k  = |w - c_k| / |w|  for |w| > g0,   |w - c_k| for |w| <= g0 (0 to the centre 0).

``f`` depends on ``w`` and on the palette only, and the palette changes only at a
fixing stage. So instead of touching K centres (or a window of them) for every
weight at every training step, `interpolation_table` tabulates ``f`` once per
stage as a linear function on each of 2**11 log-uniform buckets per octave of
``|w|``. The bucket of a weight comes from the bits of its float32 (exponent and
top mantissa bits: `bucket_rows`), so a training step costs a few integer ops, one
gather and a multiply-add per weight, and no search. ``f`` varies on the scale
``tau |w|`` (relative distances), which log-uniform buckets resolve evenly; its
kinks sit on the centres, which are sums of a few powers of two and so bucket
boundaries as a rule; the jump at ``g0`` (absolute to relative distances) is a
boundary for the default g0 = 2**-7, and a split bucket otherwise. The table
reports its error, measured inside the buckets, as ``max_error``.

Pure numpy, float64; `softmin_term` is the exact dense evaluation the table is
built from (and the reference the tests compare with).
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: Buckets per octave of |w|: 2**BUCKET_BITS (the top mantissa bits of a float32).
BUCKET_BITS = 11
#: The table covers 2**LOW_EXPONENT < |w| <= 2**HIGH_EXPONENT in log-uniform buckets;
#: smaller magnitudes share the first bucket (interpolated from 0), larger ones get
#: the value at 2**HIGH_EXPONENT (and no gradient); see also TAIL_OCTAVES.
LOW_EXPONENT = -24
HIGH_EXPONENT = 16
_SHIFT = 23 - BUCKET_BITS
_BASE = int(np.float32(2.0 ** LOW_EXPONENT).view(np.int32)) >> _SHIFT
#: Buckets per sign.
BUCKETS = (HIGH_EXPONENT - LOW_EXPONENT) << BUCKET_BITS
#: The table follows f up to 2**TAIL_OCTAVES times the largest |centre| (or g0).
TAIL_OCTAVES = 6
#: Points of the uniform grid that gives f in the tiny buckets of |w| <= g0.
SMALL_GRID = 4097
_CHUNK_ELEMENTS = 1 << 22


def softmin_term(w, palette, temperature: float, zero_distance: float,
                 large=None) -> np.ndarray:
    """Exact ``f(w)`` for each weight, over every centre (float64, chunked dense).

    An empty palette gives 0 (the regulariser is off before the first stage).
    `large` (bool per weight, optional) forces the relative-distance branch where
    True: its limit at ``|w| = g0`` is where the table's next bucket starts.
    """
    w = np.asarray(w, np.float64).ravel()
    force = (np.zeros(w.shape, bool) if large is None
             else np.broadcast_to(np.asarray(large, bool).ravel(), w.shape))
    c = np.unique(np.asarray(palette, np.float64).ravel())
    out = np.zeros(w.shape, np.float64)
    if c.size == 0 or w.size == 0:
        return out
    step = max(1, _CHUNK_ELEMENTS // c.size)
    for start in range(0, w.size, step):
        x = w[start:start + step, None]
        small = (np.abs(x) <= zero_distance) & ~force[start:start + step, None]
        diff = np.abs(x - c[None, :])
        d = np.where(small, diff, diff / np.where(small, 1.0, np.abs(x)))
        d = np.where(small & (c[None, :] == 0.0), 0.0, d)
        logits = -d / temperature
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        out[start:start + step] = (p * d).sum(axis=1) / p.sum(axis=1)
    return out


def bucket_rows(w: np.ndarray) -> np.ndarray:
    """Row of the table for each float32 weight (the training step computes the same in TF).

    ``bits(|w|)`` of a float32 grows with ``|w|`` and its exponent field is
    ``log2 |w|``: ``(bits - 1) >> (23 - BUCKET_BITS)`` numbers log-uniform buckets
    ``(lower, upper]`` with no search. Positive weights use rows ``[0, BUCKETS)``,
    negative ones ``[BUCKETS, 2 BUCKETS)``.
    """
    w = np.asarray(w, np.float32)
    bits = w.view(np.int32) & np.int32(0x7FFFFFFF)
    b = np.clip(((bits - 1) >> _SHIFT) - _BASE, 0, BUCKETS - 1)
    return np.where(w.view(np.int32) < 0, BUCKETS + b, b)  # the sign bit (-0.0 too)


#: Rows of the expanded table the training step reads: one per value of the top
#: 32 - _SHIFT bits of ``bits(w) - 1`` (sign, exponent, top mantissa bits).
EXPANDED_ROWS = 1 << (32 - _SHIFT)


def expanded_rows(w: np.ndarray) -> np.ndarray:
    """Row of the EXPANDED table for each float32 weight: ``(bits(w) - 1) mod 2**32 >> _SHIFT``.

    Two integer ops and no clipping, so the training step needs only a bitcast to
    uint32, a subtraction and a logical shift before its gather (`expand` lays the
    table out for it). The ``- 1`` makes each bucket ``(lower, upper]``, like `bucket_rows`.
    """
    bits = np.asarray(w, np.float32).view(np.uint32).astype(np.int64)
    return ((bits - 1) % (1 << 32)) >> _SHIFT


def _expanded_map() -> np.ndarray:
    """For each expanded row, the `bucket_rows` row it stands for (`expand`)."""
    r = np.arange(EXPANDED_ROWS, dtype=np.int64)
    half = EXPANDED_ROWS // 2
    negative = r >= half
    magnitude = np.clip(np.where(negative, r - half, r) - _BASE, 0, BUCKETS - 1)
    out = np.where(negative, BUCKETS + magnitude, magnitude)
    # +0.0 (bits 0) wraps to the last row and -0.0 (bits 0x80000000) to the last
    # positive one; both belong to the first bucket (f near 0).
    out[EXPANDED_ROWS - 1] = 0
    out[half - 1] = BUCKETS
    return out


def expand(table: "InterpolationTable") -> np.ndarray:
    """float32 [EXPANDED_ROWS, 2] coefficients indexed by `expanded_rows` (same values as
    `evaluate_table`, except the bucket split at a g0 that is not a bucket boundary,
    which the caller resolves from ``table.split_row``)."""
    global _MAP
    if _MAP is None:
        _MAP = _expanded_map()
    return table.coefficients[_MAP].astype(np.float32)


_MAP = None


def _bucket_edges() -> np.ndarray:
    """Magnitudes of the bucket boundaries: edges[k] < |w| <= edges[k + 1] for bucket k."""
    bits = (np.arange(BUCKETS + 1, dtype=np.int64) + _BASE) << _SHIFT
    edges = bits.astype(np.int32).view(np.float32).astype(np.float64)
    edges[0] = 0.0  # the first bucket also takes every smaller magnitude, down to 0
    return edges


@dataclasses.dataclass(frozen=True)
class InterpolationTable:
    """``f`` as a piecewise-linear function on log-uniform buckets of ``|w|``.

    Attributes:
      coefficients: float64 [2 BUCKETS, 2]: row ``r`` holds ``(a, b)`` with
        ``f(w) ~= a + b * w`` for the weights of that row (`bucket_rows`).
      max_error: the largest ``|table - f|`` at the midpoint of every bucket above g0
        (and of every 64th below it), up to 2**TAIL_OCTAVES times the largest |centre|.
      zero_distance: g0. When it is not a bucket boundary, the bucket holding it has
        a jump (absolute to relative distances): ``split_row`` is that bucket's row
        for positive weights and rows ``2 BUCKETS`` (``|w| <= g0``) and ``2 BUCKETS + 1``
        (``|w| > g0``) of `coefficients` replace it (negative weights: +2).
    """

    coefficients: np.ndarray
    max_error: float
    zero_distance: float
    split_row: int = -1


def split_row(zero_distance: float) -> int:
    """The positive row whose bucket holds g0 strictly inside it, or -1 (g0 a boundary)."""
    g0 = np.float32(zero_distance)
    row = int(bucket_rows(np.float32([g0]))[0])
    edges = _bucket_edges()
    return -1 if edges[row + 1] == float(g0) else row


def interpolation_table(palette, temperature: float, zero_distance: float) -> InterpolationTable:
    """Tabulate ``f`` for `palette` (see the module docstring); an empty palette gives 0."""
    c = np.unique(np.asarray(palette, np.float32).ravel()).astype(np.float64)
    g0 = float(np.float32(zero_distance))
    rows = 2 * BUCKETS + 4
    if c.size == 0:
        return InterpolationTable(np.zeros((rows, 2)), 0.0, g0)

    def f(x, large=None):
        return softmin_term(x, c, temperature, zero_distance, large=large)

    edges = _bucket_edges()
    # Far beyond every centre f flattens out (all centres on one side): stop
    # evaluating it there and continue with the last value.
    top = max(float(np.abs(c).max()), g0) * 2.0 ** TAIL_OCTAVES
    used = int(min(BUCKETS, np.searchsorted(edges, top, side="left") + 1))
    lo = edges[:used]
    split = split_row(g0)
    # |w| <= g0 (absolute distances): f is smooth on the scale tau >> g0 there, and the
    # buckets are many and tiny: take their edge values from a fine uniform grid.
    grid = np.linspace(-g0, g0, SMALL_GRID)
    f_grid = f(grid)
    small_edges = edges[:used + 1] <= g0

    def at_edges(sign):
        y = np.empty(used + 1)
        x = sign * edges[:used + 1]
        y[small_edges] = np.interp(x[small_edges], grid, f_grid)
        y[~small_edges] = f(x[~small_edges])
        return x, y

    coefficients = np.zeros((2 * BUCKETS + 4, 2))
    max_error = 0.0
    for sign, offset in ((1.0, 0), (-1.0, BUCKETS)):
        x, y = at_edges(sign)
        x0, x1, y0, y1 = x[:-1], x[1:], y[:-1].copy(), y[1:]
        # g0 on a boundary: the bucket just above it starts at the limit of the
        # relative-distance side, not at the absolute-distance value of g0 itself.
        at_g0 = np.nonzero(lo == g0)[0]
        if at_g0.size:
            y0[at_g0] = f(x0[at_g0], large=True)
        slope = (y1 - y0) / (x1 - x0)
        coefficients[offset:offset + used, 0] = y0 - slope * x0
        coefficients[offset:offset + used, 1] = slope
        coefficients[offset + used:offset + BUCKETS, 0] = y1[-1]
        mids = 0.5 * (x0 + x1)
        if split >= 0:
            # The bucket holding g0: two linear pieces, either side of the jump.
            a, b, gs = x0[split], x1[split], sign * g0
            ya, yg_small, yg_large, yb = f(np.array([a, gs, gs, b]),
                                           large=np.array([0, 0, 1, 1], bool))
            s_small = (yg_small - ya) / (gs - a)
            s_large = (yb - yg_large) / (b - gs)
            r = 2 * BUCKETS + (0 if sign > 0 else 2)
            coefficients[r] = (ya - s_small * a, s_small)
            coefficients[r + 1] = (yg_large - s_large * gs, s_large)
            mids = np.delete(mids, split)
        # The error estimate: every bucket's midpoint above g0, a sample below it.
        mids = mids.astype(np.float32).astype(np.float64)
        check = np.concatenate([mids[np.abs(mids) > g0], mids[np.abs(mids) <= g0][::64]])
        table = InterpolationTable(coefficients, 0.0, g0, split)
        max_error = max(max_error, float(np.abs(evaluate_table(table, check) - f(check)).max()))
    return InterpolationTable(coefficients, max_error, g0, split)


def coefficient_rows(table: InterpolationTable, w) -> np.ndarray:
    """The row of ``table.coefficients`` for each weight.

    `bucket_rows`, with the bucket holding g0 split in two (see `InterpolationTable`).
    """
    w = np.asarray(w, np.float32)
    rows = bucket_rows(w)
    if table.split_row >= 0:
        in_split = (rows == table.split_row) | (rows == BUCKETS + table.split_row)
        side = np.where(np.abs(w) <= np.float32(table.zero_distance), 0, 1)
        rows = np.where(in_split, 2 * BUCKETS + np.where(rows >= BUCKETS, 2, 0) + side, rows)
    return rows


def evaluate_table(table: InterpolationTable, w) -> np.ndarray:
    """The table's ``f(w)`` (numpy, float64 arithmetic)."""
    w = np.asarray(w, np.float64)
    r = coefficient_rows(table, w.astype(np.float32))
    return table.coefficients[r, 0] + table.coefficients[r, 1] * w
