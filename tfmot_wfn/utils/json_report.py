"""`JsonReport`: ``to_dict`` / ``to_json`` for the report dataclasses (FixingReport, HardwareCost,
DistanceSearch), written once here."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict

from tfmot_wfn.utils.atomic_files import PathLike, write_json_atomically


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON's ``null``): Python
    writes them as ``NaN`` / ``Infinity``, which strict JSON parsers (JavaScript, jq) refuse."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


class JsonReport:
    """Mixin for a dataclass: ``to_dict()`` (`dataclasses.asdict`) and ``to_json(path)``
    (the dict as indented, strict JSON, written atomically: an unknown number, such as the
    paired standard error of a drop over one example, is ``null``)."""

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    def to_json(self, path: PathLike) -> None:
        write_json_atomically(path, strict_json(self.to_dict()))


__all__ = ["JsonReport", "strict_json"]
