"""Fixed values that every compute dtype of the network represents exactly (mixed precision).

Under a mixed precision policy (``mixed_float16``, ``mixed_bfloat16``) a layer
keeps float32 variables and computes with them cast to float16 / bfloat16. The
palette is shared network-wide, so `round_for_compute_dtypes` rounds the newly
fixed values to the narrowest of those dtypes: the layers then compute with
exactly the palette values. Used by `FixingNetwork.run_fixing_stage`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from tfmot_wfn.keras.compat import autocasts, tf, variable_path


def _finfo(dtype):
    """`finfo` for numpy and ml_dtypes floats (bfloat16 is not a numpy dtype)."""
    import ml_dtypes  # a TensorFlow dependency

    return ml_dtypes.finfo(dtype)


def _narrow_dtype(wrapper, variable) -> Optional[np.dtype]:
    """The float dtype narrower than the variable's in which the layer computes with it, or None.

    Under a mixed precision policy (``mixed_float16``, ``mixed_bfloat16``) a layer
    keeps float32 variables and reads them cast to its compute dtype, unless the
    variable opts out of autocasting (BatchNormalization's gamma/beta do).
    """
    if not autocasts(variable):
        return None
    compute = tf.dtypes.as_dtype(wrapper.layer.compute_dtype)
    stored = tf.dtypes.as_dtype(variable.dtype)
    if not compute.is_floating or compute.size >= stored.size:
        return None
    return np.dtype(compute.as_numpy_dtype)


def round_for_compute_dtypes(slots: Sequence, values, fixed, newly) -> np.ndarray:
    """Make fixed values exactly representable in every compute dtype that reads them.

    The palette is shared network-wide, so newly fixed values are rounded (to
    nearest) to each narrower compute dtype used anywhere in the network, coarsest
    last; a value that is 0 or a sum of a few powers of two within range is left
    unchanged (almost all are). Previously fixed values are never changed; if one
    is not representable (the model was fixed under another policy), or a value is
    out of the dtype's range, this raises instead.

    `slots`: the network's `WeightSlot`s (``wrapper``, ``variable``, ``start``,
    ``stop``); `values`, `fixed`, `newly`: flat arrays in their order.
    """
    spans = [(slot, dtype) for slot in slots
             for dtype in [_narrow_dtype(slot.wrapper, slot.variable)] if dtype is not None]
    if not spans:
        return values
    values = values.copy()
    # Coarsest last: fewer mantissa bits, then a smaller range.
    order = sorted({dtype for _, dtype in spans},
                   key=lambda d: (_finfo(d).nmant, float(_finfo(d).max)), reverse=True)
    with np.errstate(over="ignore"):
        for dtype in order:
            values[newly] = values[newly].astype(dtype).astype(np.float32)
    for slot, dtype in spans:
        part, mask = values[slot.start:slot.stop], fixed[slot.start:slot.stop]
        with np.errstate(over="ignore"):
            exact = part.astype(dtype).astype(np.float32) == part
        bad = mask & ~exact
        if bad.any():
            example = float(part[bad][0])
            raise FloatingPointError(
                f"Fixed value {example!r} of weight {variable_path(slot.variable)!r} in layer "
                f"{slot.wrapper.layer.name!r} is not exactly representable in "
                f"{np.dtype(dtype).name}, the dtype the layer computes in (largest finite "
                f"value {float(_finfo(dtype).max)!r}). Either the weights are "
                "too large for this mixed precision policy, or the model was fixed under another "
                "policy: use the same policy for the whole run, or keep this layer in float32 "
                "(dtype='float32').")
    return values
