"""Argument checks with errors that say what was wrong (pure Python and numpy).

One helper per kind of argument, shared by the public constructors and
functions (`FixingConfig`, `run_fixing_stage`, ...), so that a bad argument is
refused with the same wording everywhere:

```python
check_real("distance", 0.0, 0.0, 1.0)   # ValueError: distance must be in (0.0, 1.0), got 0.0
check_real("distance", "a", 0.0)        # TypeError: distance must be a number, got str 'a'
check_bool("fix_biases", "no")          # TypeError: fix_biases must be True or False, got str 'no'
```
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np


def check_number(name: str, value) -> float:
    """`value` as a float if it is a real number (booleans refused), else TypeError; no range
    check (NaN passes: the caller's range check refuses it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def check_int(name: str, value, minimum: int) -> int:
    """`value` as an int >= `minimum`: TypeError for a non-integer (booleans too), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_real(name: str, value, low: float, high: Optional[float] = None, *,
               low_open: bool = True, high_open: bool = True) -> float:
    """`value` as a finite float within the bounds, else TypeError / ValueError.

    Without `high` the bound reads ``> low`` (``>= low`` when `low_open` is False);
    with it, an interval such as ``(low, high]``. Booleans are not numbers here.
    """
    value = check_number(name, value)
    above = value > low if low_open else value >= low
    below = high is None or (value < high if high_open else value <= high)
    if not (math.isfinite(value) and above and below):
        if high is None:
            bound = f"{'>' if low_open else '>='} {low}"
        else:
            bound = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return value


def check_bool(name: str, value) -> bool:
    """`value` as a bool; anything but a real boolean (``bool("no")`` is True) is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_positive_int(name: str, value) -> int:
    """`value` as an int >= 1 (booleans refused), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
