"""The regulariser's lookup table in TensorFlow variables, refreshed once per fixing stage.

`tfmot_wfn.core.regularizer_term.interpolation_table` tabulates the per-weight term
``f(w)`` for the current palette. `RegularizerTable` keeps that table and the
network's free-weight mask (flattened in the order of `flat_weights`) in
non-trainable ``tf.Variable``s of fixed shapes, so the compiled train step reads
the current table without retracing; `refresh` rewrites them after a stage, after
a restore, or whenever the palette or the masks may have changed.

A training step then costs, for all fixable weights of the network together: one
concatenation, a few integer ops on the float bits (the bucket of each weight),
one gather of two coefficients and a multiply-add, instead of a window of centres
per weight.

The variables are derived data: they are not tracked by Keras and never saved;
the palette and masks they are made from are.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from tfmot_wfn.core import regularizer_term
from tfmot_wfn.keras.compat import tf

_ATTRIBUTE = "_wfn_regularizer_tables"


def flat_weights(wrappers) -> tf.Tensor:
    """Every fixable weight of `wrappers`, flattened and concatenated (float32)."""
    parts = [tf.reshape(tf.cast(tf.convert_to_tensor(v), tf.float32), [-1])
             for w in wrappers for v in w.fixable_variables]
    return parts[0] if len(parts) == 1 else tf.concat(parts, 0)


def table_rows(w, zero_distance: float):
    """`regularizer_term.table_rows` in TensorFlow: the table row of each float32 weight."""
    bits = tf.bitcast(w, tf.int32)
    magnitude = tf.bitwise.bitwise_and(bits, 0x7FFFFFFF)
    bucket = tf.clip_by_value(
        tf.bitwise.right_shift(magnitude - 1, regularizer_term._SHIFT) - regularizer_term._BASE,
        0, regularizer_term.BUCKETS - 1)
    # bits >> 31 is -1 for negative weights (arithmetic shift): their rows follow.
    sign = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 31), regularizer_term.BUCKETS)
    rows = bucket + sign
    split = regularizer_term.split_row(zero_distance)
    if split >= 0:  # only for a g0 that is not a bucket boundary (the default is)
        side = tf.cast(tf.abs(w) > np.float32(zero_distance), tf.int32)
        special = 2 * regularizer_term.BUCKETS + tf.where(sign > 0, 2, 0) + side
        rows = tf.where(tf.equal(bucket, split), special, rows)
    return rows


class RegularizerTable:
    """The interpolation table and free mask of one set of wrappers (see the module docstring)."""

    def __init__(self, wrappers: Sequence):
        self.wrappers = list(wrappers)
        self.size = int(sum(int(np.prod(v.shape)) for w in self.wrappers
                            for v in w.fixable_variables))
        self.max_error = 0.0
        self._state: Tuple = ()
        rows = 2 * regularizer_term.BUCKETS + 4
        with tf.init_scope():
            self.coefficients = tf.Variable(np.zeros((rows, 2), np.float32), trainable=False,
                                            name="wfn_regularizer_coefficients")
            self.free = tf.Variable(np.zeros(self.size, np.float32), trainable=False,
                                    name="wfn_regularizer_free")
            self.free_count = tf.Variable(0.0, trainable=False, name="wfn_regularizer_free_count")
        self.refresh()

    def _observed_state(self) -> Tuple:
        """What the table is made from, cheaply: the palette and the fixed count per weight."""
        first = self.wrappers[0]
        size = int(first.palette_size.numpy())
        palette = np.asarray(first.palette.numpy())[:size]
        counts = tuple(int(np.count_nonzero(m)) for w in self.wrappers for m in w.mask_numpy())
        return size, palette.tobytes(), counts

    def refresh(self) -> None:
        """Rebuild the table from the wrappers' palette and masks (eager)."""
        with tf.init_scope():
            first = self.wrappers[0]
            size = int(first.palette_size.numpy())
            palette = np.asarray(first.palette.numpy())[:size]
            table = regularizer_term.interpolation_table(palette, first.temperature,
                                                         first.zero_distance)
            masks = [m for w in self.wrappers for m in w.mask_numpy()]
            free = (np.concatenate([~m.ravel() for m in masks]) if masks
                    else np.zeros(0, bool)).astype(np.float32)
            self.coefficients.assign(table.coefficients.astype(np.float32))
            self.free.assign(free)
            self.free_count.assign(float(free.sum()))
            self.max_error = table.max_error
            self._state = self._observed_state()

    def refresh_if_changed(self) -> bool:
        """Eager only: rebuild if the palette or the fixed counts changed. True if rebuilt."""
        with tf.init_scope():
            if self._observed_state() == self._state:
                return False
        self.refresh()
        return True

    def value(self, weights=None) -> tf.Tensor:
        """R: the mean of the tabulated term over the free weights (0 if none is free)."""
        w = flat_weights(self.wrappers) if weights is None else weights
        rows = table_rows(w, self.wrappers[0].zero_distance)
        ab = tf.gather(tf.convert_to_tensor(self.coefficients), rows)
        term = ab[:, 0] + ab[:, 1] * w
        total = tf.reduce_sum(term * tf.convert_to_tensor(self.free))
        return total / tf.maximum(tf.convert_to_tensor(self.free_count), 1.0)


def _key(wrappers) -> Tuple:
    return tuple(id(v) for w in wrappers for v in w.fixable_variables)


def table_for(wrappers: Sequence, create: bool = True):
    """The `RegularizerTable` of exactly these wrappers (made on first use), or None."""
    wrappers = list(wrappers)
    if not wrappers:
        return None
    tables: Dict[Tuple, RegularizerTable] = getattr(wrappers[0], _ATTRIBUTE, None)
    if tables is None:
        if not create:
            return None
        tables = {}
        # Plain attribute, not tracked: the table is derived data and never saved.
        object.__setattr__(wrappers[0], _ATTRIBUTE, tables)
    key = _key(wrappers)
    table = tables.get(key)
    if table is None and create:
        table = tables[key] = RegularizerTable(wrappers)
    return table


def refresh_tables(wrappers: Sequence) -> List[RegularizerTable]:
    """Rebuild every existing table that involves any of `wrappers` (after a stage)."""
    done, out = set(), []
    for w in wrappers:
        for table in (getattr(w, _ATTRIBUTE, None) or {}).values():
            if id(table) not in done:
                done.add(id(table))
                table.refresh()
                out.append(table)
    return out
