"""Pure-numpy core of Weight Fixing Networks (no TensorFlow import)."""

from tfmot_wfn.core.candidates import candidate_centres, geometric_grid
from tfmot_wfn.core.greedy_fixing import StageResult, fixing_stage, quota_for, relative_distance
from tfmot_wfn.core.powers_of_two import (
    ZERO_DISTANCE,
    additive_powers_of_two,
    format_signed_digits,
    signed_digits,
)
from tfmot_wfn.core.weight_statistics import entropy_bits, value_counts

__all__ = [
    "ZERO_DISTANCE",
    "StageResult",
    "additive_powers_of_two",
    "candidate_centres",
    "entropy_bits",
    "fixing_stage",
    "format_signed_digits",
    "geometric_grid",
    "quota_for",
    "relative_distance",
    "signed_digits",
    "value_counts",
]
