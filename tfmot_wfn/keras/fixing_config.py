"""`FixingConfig`: the fixing parameters of `fix_weights` and `WeightFixingWrapper`, validated once.

```python
config = tfmot_wfn.FixingConfig(distance=0.01, fix_batchnorm=False, rule="bounded_third")
fixed = tfmot_wfn.fix_weights(model, **config.to_kwargs())
fixed.layers[1].fixing_config == config   # True
```

(With the default ``rule="auto"`` the wrappers hold the rule it chose for the network, so
their config differs from the one passed in that field.)

`fix_weights` and `WeightFixingWrapper` take the fields as keyword arguments (the
wrapper also one whole config as ``fixing_config=``); both build a `FixingConfig`,
which checks every argument (TypeError for a wrong type, ValueError for a value out
of range) before any layer is made. A wrapper
keeps its config as ``wrapper.fixing_config``; `FixingNetwork` takes the settings
the whole network shares from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

from tfmot_wfn.core.fixing_rules import AUTO_RULE, DEFAULT_RULE, get_rule
from tfmot_wfn.core.powers_of_two import ZERO_DISTANCE
from tfmot_wfn.keras import fixing_schedule as schedules
from tfmot_wfn.utils.validation import check_bool, check_positive_int, check_real

#: Default delta (the paper's main knob). 0.015 is the coarsest setting of the
#: paper's runs (fewest unique values); on the digits demo it is lossless with
#: the default regularisation (see README, "Choosing distance").
DEFAULT_DISTANCE = 0.015
DEFAULT_REGULARIZATION = 0.4
DEFAULT_TEMPERATURE = 0.05
DEFAULT_PALETTE_CAPACITY = 4096

#: The settings every wrapper of a network must share: the network is fixed as a
#: whole, with one schedule, one palette and one regulariser.
NETWORK_SETTINGS = ("fixing_schedule", "distance", "zero_distance", "palette_capacity",
                    "regularization", "temperature", "rule", "int8_exact")


def _rule(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"rule must be a rule name (str), got {type(value).__name__}")
    return AUTO_RULE if value == AUTO_RULE else get_rule(value).name


def _schedule(value) -> schedules.FixingSchedule:
    if value is None:
        return schedules.StagedFixing()
    if isinstance(value, dict):
        value = schedules.deserialize(value)
    if not isinstance(value, schedules.FixingSchedule):
        raise TypeError(
            "fixing_schedule must be a tfmot_wfn FixingSchedule (StagedFixing or "
            f"PolynomialFixing), got {type(value).__name__}")
    return value


@dataclasses.dataclass(frozen=True)
class FixingConfig:
    """The fixing parameters of one wrapper (and, shared, of the whole network).

    Args:
      fixing_schedule: a `FixingSchedule` (or its serialized dict); default
        `StagedFixing()` (the paper's ten stages, one epoch each).
      distance: the paper's delta, in (0, 1).
      regularization: gamma of the regulariser, >= 0 (0 disables it).
      temperature: softmin temperature tau of the regulariser, > 0.
      zero_distance: magnitudes below it go to 0, in (0, 1) (g0 = 2**-7).
      fix_biases: also fix biases.
      fix_batchnorm: also fix normalization scale/shift (gamma/beta).
      palette_capacity: room for the shared palette inside each wrapper, >= 1.
      preserve_sparsity: fix the weights that are exactly 0 to 0 when the wrapper
        is built (see `fix_weights`).
      rule: which weights a greedy step may fix to its centre, one of
        `tfmot_wfn.core.fixing_rules.RULES` (``"paper"``, ``"nearest"``, ``"capped"``,
        ``"bounded"``, ``"nearest_capped"``, ``"third"``, ``"late_third"``, ``"bounded_third"``,
        ``"gentle"``), or
        ``"auto"`` (the default), which the wrapper or `fix_weights` replaces by the rule
        `fixing_rules.choose_rule` picks for the layers it wraps.
      int8_exact: keep every output channel of every kernel exactly int8 codes times one
        power-of-two scale (`tfmot_wfn.core.int8_channels`), so that
        ``export_tflite(mode="int8")`` stores every kernel channel exactly (and
        ``mode="int8_weight_only"`` every kernel as int8). Off by default.

    Raises:
      TypeError / ValueError: an argument of the wrong type or out of its range
        (the message names it and the range).
    """

    fixing_schedule: Optional[schedules.FixingSchedule] = None
    distance: float = DEFAULT_DISTANCE
    regularization: float = DEFAULT_REGULARIZATION
    temperature: float = DEFAULT_TEMPERATURE
    zero_distance: float = ZERO_DISTANCE
    fix_biases: bool = True
    fix_batchnorm: bool = True
    palette_capacity: int = DEFAULT_PALETTE_CAPACITY
    preserve_sparsity: bool = False
    rule: str = DEFAULT_RULE
    int8_exact: bool = False

    def __post_init__(self):
        checked = {
            "fixing_schedule": _schedule(self.fixing_schedule),
            "palette_capacity": check_positive_int("palette_capacity", self.palette_capacity),
            "distance": check_real("distance", self.distance, 0.0, 1.0),
            "regularization": check_real("regularization", self.regularization, 0.0,
                                         float("inf"), low_open=False),
            "temperature": check_real("temperature", self.temperature, 0.0, float("inf")),
            "zero_distance": check_real("zero_distance", self.zero_distance, 0.0, 1.0),
            "fix_biases": check_bool("fix_biases", self.fix_biases),
            "fix_batchnorm": check_bool("fix_batchnorm", self.fix_batchnorm),
            "preserve_sparsity": check_bool("preserve_sparsity", self.preserve_sparsity),
            "rule": _rule(self.rule),
            "int8_exact": check_bool("int8_exact", self.int8_exact),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)  # normalise (frozen dataclass)

    def to_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of `fix_weights` / `WeightFixingWrapper` that make this config."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def network_settings(self) -> Tuple:
        """The values of `NETWORK_SETTINGS`, which every wrapper of a network must share."""
        return tuple(getattr(self, name) for name in NETWORK_SETTINGS)
