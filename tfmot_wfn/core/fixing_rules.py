"""Named fixing rules: which weights a greedy step may fix to its chosen centre.

A greedy step picks the candidate centre that most free weights are nearest to, then
fixes a prefix of the free weights sorted by relative distance (mean distance <= a).
The rules differ in who may join that prefix (see `tfmot_wfn.core.fixing_stage`):

* ``"paper"``: any free weight, as the algorithm text reads (``nearest_only=False``, no
  per-weight cap). Fewest unique values; a centre with many very close weights (BatchNorm
  gammas at 1.0) can drag far weights onto it.
* ``"nearest"``: only the centre's own voters (weights whose nearest candidate it is).
* ``"capped"``: any free weight no farther than ``DISTANCE_CAP * a``.
* ``"nearest_capped"``: both restrictions (the default of tfmot_wfn 0.1; a saved wrapper
  config without a ``rule`` is from then and keeps it: `LEGACY_DEFAULT_RULE`).
* ``"bounded"``: any free weight no farther than ``max(a, min(DISTANCE_CAP * a, MAX_MOVE))``:
  as ``"capped"`` at small distances, and no weight moves more than 1/3 of its value (as
  far as rounding to a power of two may move it) when ``a`` is large.
* ``"third"``: any free weight no farther than ``max(a, MAX_MOVE)``: no weight moves more
  than rounding it to a power of two could (1/3 of its value) unless the stage's ``a``
  itself is larger. Far moves (BatchNorm gammas dragging kernel weights of 0.3-0.5 onto
  1.0, popular centres pulling whole ranges at a large ``a``) are out, and scattered
  weights may join a centre already in use instead of opening a new one, as under the
  paper's rule. It still lets the bulk join centres that are not its nearest
  (benchmarks/FRONTIER.md measures what that costs on MobileNetV2).
* ``"late_third"``: ``"nearest_capped"`` while the schedule fixes the first ``LATE_AFTER``
  (90%) of the weights, ``"third"`` in the stages after it: the bulk lands on its nearest
  candidate, and the last, scattered weights join centres in use instead of growing the
  palette. The depthwise default before ``"gentle"``: its MobileNetV2 rows were within run-to-run
  noise of ``"bounded_third"``'s (benchmarks/FRONTIER.md).
* ``"bounded_third"``: ``"bounded"`` for the first ``LATE_AFTER`` of the weights, then as
  ``"third"``. Early stages, whose allowed distance is large, may put weights on a popular
  centre that is not their nearest (as the paper's rule does, within ``max(a, min(3a, 1/3))``),
  which is where the paper's rule gets its low entropy at small deltas; no weight moves
  farther than that, so there is no dragging. `PLAIN_RULE`.
* ``"gentle"``: ``"late_third"``, and no stage allows a mean distance above ``REACH`` (4)
  times ``distance`` (the paper's schedule allows 10x, 9x, ... in its first stages). The
  first two stages fix 30% and then 60% of the weights with mean moves of up to 10 and 9
  times ``distance`` (15% and 13.5% at 0.015), which is where a MobileNetV2 can lose accuracy
  that its fine-tuning does not win back; here the same shares are fixed with smaller moves,
  at the price of finer centres (more values, higher entropy). `DEPTHWISE_RULE`: at the
  default distance it is the one rule that keeps a MobileNetV2 trained on digits within half a
  point of its float model (benchmarks/FRONTIER.md).

``"auto"`` (the default, `AUTO_RULE`) is not a rule of its own: `fix_weights` replaces it by
`DEPTHWISE_RULE` (``"gentle"``) when the network has depthwise or separable convolutions
(MobileNet-style networks, whose accuracy the large early moves of the other rules can cost)
and by
`PLAIN_RULE` otherwise (`choose_rule`); the wrappers, the report and a saved model hold the
rule it chose.

```python
from tfmot_wfn.core import fixing_rules
fixing_rules.stage_options("paper")
# {'nearest_only': False, 'distance_cap': None, 'max_move': None}
fixing_rules.stage_options("late_third", fraction=0.95)   # a stage past 90%: as "third"
# {'nearest_only': False, 'distance_cap': None, 'max_move': 0.333...}
fixing_rules.choose_rule("auto", depthwise=True)
# 'gentle'
fixing_rules.get_rule("gentle").stage_distance(0.015, 10.0)   # a first stage: 4 x 0.015
# 0.06
```
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

from tfmot_wfn.core.greedy_fixing import DISTANCE_CAP, MAX_MOVE

#: ``"late_third"`` is ``"nearest_capped"`` until this share of the weights is fixed.
LATE_AFTER = 0.9
#: ``"gentle"``: no stage's allowed distance exceeds this many times ``distance``.
REACH = 4.0


@dataclasses.dataclass(frozen=True)
class FixingRule:
    """The `fixing_stage` options of one named rule."""

    name: str
    nearest_only: bool
    distance_cap: Optional[float]
    summary: str
    max_move: Optional[float] = None
    #: Stages whose schedule fraction is above `late_after` use the rule `late` instead.
    late_after: Optional[float] = None
    late: Optional["FixingRule"] = None
    #: A stage's allowed distance is at most ``reach`` times the run's ``distance`` (None:
    #: the schedule's own multiplier, up to 10x in the paper's first stage).
    reach: Optional[float] = None

    def stage_distance(self, distance: float, multiplier: float) -> float:
        """The allowed distance of a stage whose schedule multiplies ``distance`` (the
        run's delta) by ``multiplier``: ``distance * min(multiplier, reach)``."""
        if self.reach is not None:
            multiplier = min(float(multiplier), self.reach)
        return float(distance) * float(multiplier)

    def stage_options(self, fraction: Optional[float] = None) -> Dict:
        """The `fixing_stage` options of a stage at schedule fraction ``fraction`` (None: an
        early stage)."""
        if self.late is not None and fraction is not None and float(fraction) > self.late_after:
            return self.late.stage_options()
        return {"nearest_only": self.nearest_only, "distance_cap": self.distance_cap,
                "max_move": self.max_move}


_THIRD = FixingRule("third", False, None, "any free weight within max(a, 1/3)", MAX_MOVE)
RULES: Dict[str, FixingRule] = {r.name: r for r in (
    FixingRule("paper", False, None, "any free weight (the paper's text)"),
    FixingRule("nearest", True, None, "only the centre's own voters"),
    FixingRule("capped", False, DISTANCE_CAP, f"any free weight within {DISTANCE_CAP:g}a"),
    FixingRule("nearest_capped", True, DISTANCE_CAP,
               f"the centre's own voters within {DISTANCE_CAP:g}a"),
    FixingRule("bounded", False, DISTANCE_CAP,
               f"any free weight within max(a, min({DISTANCE_CAP:g}a, 1/3))", MAX_MOVE),
    _THIRD,
    FixingRule("late_third", True, DISTANCE_CAP,
               f"nearest_capped up to {LATE_AFTER:g} of the weights, then as third",
               late_after=LATE_AFTER, late=_THIRD),
    FixingRule("bounded_third", False, DISTANCE_CAP,
               f"bounded up to {LATE_AFTER:g} of the weights, then as third", MAX_MOVE,
               late_after=LATE_AFTER, late=_THIRD),
)}
RULES["gentle"] = dataclasses.replace(
    RULES["late_third"], name="gentle", reach=REACH,
    summary=f"late_third, no stage's distance above {REACH:g} x delta")
#: ``rule="auto"``: `choose_rule` picks `DEPTHWISE_RULE` for a network with depthwise or
#: separable convolutions, `PLAIN_RULE` for any other.
AUTO_RULE, PLAIN_RULE, DEPTHWISE_RULE = "auto", "bounded_third", "gentle"
DEFAULT_RULE = AUTO_RULE
#: The rule of wrapper configs saved before ``rule`` was written into every config.
LEGACY_DEFAULT_RULE = "nearest_capped"


def get_rule(name: str) -> FixingRule:
    """The rule called ``name``; a clear error listing the names otherwise."""
    rule = RULES.get(str(name))
    if rule is None and name == AUTO_RULE:
        raise ValueError(f"{AUTO_RULE!r} stands for a rule chosen per network: call "
                         f"choose_rule({AUTO_RULE!r}, depthwise=...) first")
    if rule is None:
        raise ValueError(f"unknown fixing rule {name!r}: use one of {sorted(RULES)} or "
                         f"{AUTO_RULE!r} (the default)")
    return rule


def choose_rule(name: str, depthwise: bool) -> str:
    """The concrete rule that ``name`` stands for in a network: ``name`` itself, or for
    ``"auto"`` `DEPTHWISE_RULE` if ``depthwise`` (the network has depthwise or separable
    convolutions), else `PLAIN_RULE`. A ValueError names the choices for an unknown name."""
    if name == AUTO_RULE:
        return DEPTHWISE_RULE if depthwise else PLAIN_RULE
    return get_rule(name).name


def stage_options(name: str, fraction: Optional[float] = None) -> Dict:
    """``{"nearest_only": ..., "distance_cap": ..., "max_move": ...}`` for `fixing_stage` at
    a stage of schedule fraction ``fraction`` (only the rules with a late part,
    ``"late_third"`` and ``"bounded_third"``, depend on it)."""
    return get_rule(name).stage_options(fraction)


def stage_distance(name: str, distance: float, multiplier: float) -> float:
    """The allowed distance of a stage under rule ``name`` (`FixingRule.stage_distance`):
    ``distance * multiplier``, with the multiplier at most the rule's ``reach``."""
    return get_rule(name).stage_distance(distance, multiplier)


__all__ = ["AUTO_RULE", "DEFAULT_RULE", "DEPTHWISE_RULE", "FixingRule", "LATE_AFTER",
           "LEGACY_DEFAULT_RULE", "PLAIN_RULE", "REACH", "RULES", "choose_rule", "get_rule",
           "stage_distance", "stage_options"]
