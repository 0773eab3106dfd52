"""`JsonReport`: ``to_dict`` / ``to_json`` for the report dataclasses (FixingReport, HardwareCost,
DistanceSearch), written once here."""

from __future__ import annotations

import dataclasses
from typing import Dict

from tfmot_wfn.utils.atomic_files import PathLike, write_json_atomically


class JsonReport:
    """Mixin for a dataclass: ``to_dict()`` (`dataclasses.asdict`) and ``to_json(path)``
    (the dict as indented JSON, written atomically)."""

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    def to_json(self, path: PathLike) -> None:
        write_json_atomically(path, self.to_dict())


__all__ = ["JsonReport"]
