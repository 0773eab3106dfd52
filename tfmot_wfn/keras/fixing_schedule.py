"""Fixing schedules: when to run a fixing stage, to which fraction, at which distance.

Like tfmot's `PruningSchedule`: ``schedule(step) -> (should_fix, fraction)``,
plus ``distance_multiplier(step)``: the allowed distance of a stage is
``distance * distance_multiplier(step)`` (the paper's shrinking allowance), the
multiplier at most the fixing rule's ``reach`` where it has one
(`tfmot_wfn.core.fixing_rules.stage_distance`, e.g. 4 for ``rule="gentle"``).
Schedules run in Python (the fixing stage is a numpy computation), so `step`
is a plain integer.
"""

from __future__ import annotations

import abc
import math
from typing import Any, Dict, Optional, Sequence, Tuple

from tfmot_wfn.keras.compat import keras
from tfmot_wfn.utils.validation import check_int, check_number

#: The paper's cumulative fractions (reference default).
PAPER_FRACTIONS = (0.3, 0.6, 0.8, 0.9, 0.95, 0.975, 0.99, 0.9975, 0.999, 1.0)


class FixingSchedule(metaclass=abc.ABCMeta):
    """Base class of fixing schedules."""

    @abc.abstractmethod
    def __call__(self, step: int) -> Tuple[bool, float]:
        """``(should_fix, fraction)`` at training step `step`."""

    @abc.abstractmethod
    def distance_multiplier(self, step: int) -> float:
        """Factor on the wrapper's `distance` for a stage run at `step`."""

    @property
    @abc.abstractmethod
    def end_step(self) -> int:
        """Step of the last fixing stage (after it every weight is fixed if the final fraction is 1)."""

    @abc.abstractmethod
    def get_config(self) -> Dict[str, Any]:
        """Constructor arguments."""

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "FixingSchedule":
        return cls(**config)

    def copy(self) -> "FixingSchedule":
        """A new schedule of the same config: `fix_weights` gives its wrappers one, since
        `resolve` changes an epoch-based schedule in place."""
        return type(self).from_config(self.get_config())

    def resolve(self, steps_per_epoch: Optional[int]) -> None:
        """Hook for schedules that count in epochs; called by `UpdateFixingStep`."""

    def stage_at(self, step: int) -> Optional[int]:
        """Index (from 0) of the stage that runs at `step`, or None.

        This default counts the stages of steps ``0..step`` (O(step) calls);
        the built-in schedules compute it directly.
        """
        step = int(step)
        if not self(step)[0]:
            return None
        return sum(1 for s in range(step) if self(s)[0])

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def check_fractions(fractions: Sequence[float]) -> Tuple[float, ...]:
    """The cumulative fixed fractions of a staged schedule as a tuple, each in (0, 1] and
    strictly increasing; TypeError / ValueError saying what was wrong otherwise."""
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence) and not (
            hasattr(fractions, "__iter__") and hasattr(fractions, "__len__")):
        raise TypeError(
            "fractions must be a sequence of numbers such as (0.3, 0.6, 0.9, 1.0), got "
            f"{type(fractions).__name__} {fractions!r}")
    fractions = tuple(check_number("every fraction", f) for f in fractions)
    if not fractions:
        raise ValueError("fractions must not be empty; e.g. (0.3, 0.6, 0.9, 1.0)")
    for f in fractions:
        if not (0.0 < f <= 1.0) or math.isnan(f):
            raise ValueError(f"every fraction must be in (0, 1], got {fractions}")
    if any(b <= a for a, b in zip(fractions, fractions[1:])):
        raise ValueError(f"fractions must be strictly increasing, got {fractions}")
    return fractions


@keras.saving.register_keras_serializable(package="tfmot_wfn")
class StagedFixing(FixingSchedule):
    """The paper's staircase: fix to `fractions[i]` at ``begin_step + i * steps_per_stage``.

    Stage i allows the distance ``distance * max(1, N - i)`` (N stages): 10x,
    9x, ..., 1x for the default ten fractions (a rule with a ``reach`` caps the
    multiplier: ``rule="gentle"`` at 4x). Train `steps_per_stage` steps
    between stages; after the final stage everything is fixed.

    Args:
      fractions: strictly increasing cumulative fractions in (0, 1].
      steps_per_stage: training steps between stages. None: `epochs_per_stage`
        epochs of `model.fit`, resolved by `UpdateFixingStep` at the start of training.
      begin_step: step of the first stage.
      epochs_per_stage: used only when `steps_per_stage` is None.

    ```python
    schedule = tfmot_wfn.StagedFixing(steps_per_stage=100)
    schedule(0)    # (True, 0.3)
    schedule(50)   # (False, 0.3)
    schedule(900)  # (True, 1.0)
    ```
    """

    def __init__(
        self,
        fractions: Sequence[float] = PAPER_FRACTIONS,
        steps_per_stage: Optional[int] = None,
        begin_step: int = 0,
        epochs_per_stage: int = 1,
    ):
        self.fractions = check_fractions(fractions)
        self.steps_per_stage = None if steps_per_stage is None else check_int(
            "steps_per_stage", steps_per_stage, 1)
        self.begin_step = check_int("begin_step", begin_step, 0)
        self.epochs_per_stage = check_int("epochs_per_stage", epochs_per_stage, 1)

    def resolve(self, steps_per_epoch: Optional[int]) -> None:
        if self.steps_per_stage is None:
            if not steps_per_epoch:
                raise ValueError(
                    "StagedFixing(steps_per_stage=None) counts in epochs, but the number of "
                    "steps per epoch is unknown (an infinite dataset?). Pass steps_per_stage "
                    "explicitly, or steps_per_epoch to fit().")
            self.steps_per_stage = int(steps_per_epoch) * self.epochs_per_stage

    def _require_resolved(self) -> int:
        if self.steps_per_stage is None:
            raise ValueError(
                "StagedFixing.steps_per_stage is not set yet: it is resolved from fit() by "
                "UpdateFixingStep, or pass steps_per_stage=... explicitly.")
        return self.steps_per_stage

    def stage_at(self, step: int) -> Optional[int]:
        """Index of the stage that runs at `step`, or None."""
        sps = self._require_resolved()
        offset = int(step) - self.begin_step
        if offset < 0 or offset % sps:
            return None
        i = offset // sps
        return i if i < len(self.fractions) else None

    def __call__(self, step: int) -> Tuple[bool, float]:
        sps = self._require_resolved()
        i = self.stage_at(step)
        if i is not None:
            return True, self.fractions[i]
        done = (int(step) - self.begin_step) // sps
        if done < 0:
            return False, 0.0
        return False, self.fractions[min(done, len(self.fractions) - 1)]

    def distance_multiplier(self, step: int) -> float:
        sps = self._require_resolved()
        i = max(0, (int(step) - self.begin_step) // sps)
        return float(max(1, len(self.fractions) - i))

    @property
    def end_step(self) -> int:
        return self.begin_step + (len(self.fractions) - 1) * self._require_resolved()

    def get_config(self):
        return {
            "fractions": list(self.fractions),
            "steps_per_stage": self.steps_per_stage,
            "begin_step": self.begin_step,
            "epochs_per_stage": self.epochs_per_stage,
        }


@keras.saving.register_keras_serializable(package="tfmot_wfn")
class PolynomialFixing(FixingSchedule):
    """Fixed fraction growing polynomially from `initial_fraction` to `final_fraction`.

    Like tfmot's `PolynomialDecay`: ``f(t) = final + (initial - final) * (1 - p)**power``
    with ``p = (step - begin_step) / (end_step - begin_step)``; a stage runs at
    `begin_step`, every `frequency` steps, and at `end_step`. The allowed
    distance shrinks linearly from ``max_multiplier`` to 1 times `distance`.

    ```python
    schedule = tfmot_wfn.PolynomialFixing(0.3, 1.0, begin_step=0, end_step=1000)
    schedule(0)     # (True, 0.3)
    schedule(1000)  # (True, 1.0)
    ```
    """

    def __init__(
        self,
        initial_fraction: float,
        final_fraction: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
        max_multiplier: float = 10.0,
    ):
        initial_fraction = check_number("initial_fraction", initial_fraction)
        final_fraction = check_number("final_fraction", final_fraction)
        if not 0.0 < initial_fraction <= 1.0:
            raise ValueError(f"initial_fraction must be in (0, 1], got {initial_fraction}")
        if not initial_fraction <= final_fraction <= 1.0:
            raise ValueError(
                f"final_fraction must be in [initial_fraction, 1], got {final_fraction} "
                f"(initial_fraction={initial_fraction})")
        self.initial_fraction = initial_fraction
        self.final_fraction = final_fraction
        self.begin_step = check_int("begin_step", begin_step, 0)
        self._end_step = check_int("end_step", end_step, 0)
        if self._end_step <= self.begin_step:
            raise ValueError(f"end_step ({end_step}) must be greater than begin_step ({begin_step})")
        self.power = check_number("power", power)
        if not self.power > 0:
            raise ValueError(f"power must be > 0, got {power}")
        self.frequency = check_int("frequency", frequency, 1)
        self.max_multiplier = check_number("max_multiplier", max_multiplier)
        if not self.max_multiplier >= 1.0:
            raise ValueError(f"max_multiplier must be >= 1, got {max_multiplier}")

    def _progress(self, step: int) -> float:
        p = (int(step) - self.begin_step) / (self._end_step - self.begin_step)
        return min(1.0, max(0.0, p))

    def fraction_at(self, step: int) -> float:
        p = self._progress(step)
        if p <= 0.0:  # exact end points (the formula gives e.g. 0.30000000000000004)
            return self.initial_fraction
        if p >= 1.0:
            return self.final_fraction
        return self.final_fraction + (self.initial_fraction - self.final_fraction) * (1 - p) ** self.power

    def __call__(self, step: int) -> Tuple[bool, float]:
        step = int(step)
        if step < self.begin_step:
            return False, 0.0
        should = step <= self._end_step and (
            (step - self.begin_step) % self.frequency == 0 or step == self._end_step)
        return should, self.fraction_at(step)

    def stage_at(self, step: int) -> Optional[int]:
        if not self(step)[0]:
            return None
        # A stage every `frequency` steps from begin_step, and one more at an
        # end_step off that grid.
        return -(-(int(step) - self.begin_step) // self.frequency)

    def distance_multiplier(self, step: int) -> float:
        return 1.0 + (self.max_multiplier - 1.0) * (1.0 - self._progress(step))

    @property
    def end_step(self) -> int:
        return self._end_step

    def get_config(self):
        return {
            "initial_fraction": self.initial_fraction,
            "final_fraction": self.final_fraction,
            "begin_step": self.begin_step,
            "end_step": self._end_step,
            "power": self.power,
            "frequency": self.frequency,
            "max_multiplier": self.max_multiplier,
        }


_BUILT_IN = {"StagedFixing": StagedFixing, "PolynomialFixing": PolynomialFixing}


def serialize(schedule: FixingSchedule) -> Dict[str, Any]:
    """``{"class_name", "config"}``; a schedule class of your own also records its Keras
    registered name (``"package>Name"``), by which `deserialize` finds it again."""
    config = {"class_name": type(schedule).__name__, "config": schedule.get_config()}
    if type(schedule).__name__ not in _BUILT_IN:
        config["registered_name"] = keras.saving.get_registered_name(type(schedule))
    return config


def _custom_class(config, custom_objects=None):
    """The schedule class of a config that is not built in: Keras-registered
    (``@keras.saving.register_keras_serializable``), in ``custom_objects`` or in the active
    custom object scope (``load_model(..., custom_objects={...})`` opens one)."""
    for name in (config.get("registered_name"), config.get("class_name")):
        if name:
            cls = keras.saving.get_registered_object(name, custom_objects=custom_objects)
            if isinstance(cls, type) and issubclass(cls, FixingSchedule):
                return cls
    return None


def deserialize(config, custom_objects: Optional[Dict[str, Any]] = None) -> FixingSchedule:
    """The schedule of a `serialize` config (a schedule is returned as it is); a class of
    your own is looked up as `_custom_class` says."""
    if isinstance(config, FixingSchedule):
        return config
    name = config.get("class_name")
    cls = _BUILT_IN.get(name) or _custom_class(config, custom_objects)
    if cls is None:
        raise ValueError(
            f"Unknown fixing schedule {name!r}; expected one of {sorted(_BUILT_IN)} or a "
            "FixingSchedule subclass known to Keras: decorate it with "
            "@keras.saving.register_keras_serializable() before loading, or pass "
            f"custom_objects={{{name!r}: {name}}} to keras.models.load_model")
    return cls.from_config(config["config"])
