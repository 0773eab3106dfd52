"""Per-operation energies of a hardware target, for the hardware cost estimate (pure Python).

The defaults are the widely used 45 nm figures of M. Horowitz, "Computing's energy
problem (and what we can do about it)", ISSCC 2014: fp32 multiply 3.7 pJ, fp32 add
0.9 pJ, int8 multiply 0.2 pJ, int8 add 0.03 pJ, int32 add 0.1 pJ, 32-bit read from
an 8 KB SRAM 5 pJ, 32-bit DRAM read 640 pJ. Energies at other widths follow one
documented rule (`EnergyTable.add_pj`, `shift_pj`, `int_mul_pj`, `read_pj`):

* integer add (and shift): through the two table points (8 bits: ``int8_add_pj``,
  32 bits: ``int32_add_pj``), linear in between, proportional to the width outside
  (a 16-bit add costs 0.0533 pJ with the defaults);
* shift: an add of the same width unless ``shift_32bit_pj`` is given (then that
  figure, scaled with the width like an add);
* integer multiply: quadratic in the width from the 8-bit figure;
* memory read: linear in the bits read from the 32-bit figure.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional

MEMORIES = ("dram", "sram")
DEFAULT_SOURCE = "M. Horowitz, ISSCC 2014, 45 nm"


@dataclasses.dataclass(frozen=True)
class EnergyTable:
    """Energy per operation in picojoules (pJ). Defaults: Horowitz, ISSCC 2014, 45 nm.

    Plug in your hardware's numbers, e.g.
    ``EnergyTable(dram_read_32bit_pj=160.0, shift_32bit_pj=0.02)``.
    """

    fp32_mul_pj: float = 3.7
    fp32_add_pj: float = 0.9
    int8_mul_pj: float = 0.2
    int8_add_pj: float = 0.03
    int32_add_pj: float = 0.1
    sram_read_32bit_pj: float = 5.0
    dram_read_32bit_pj: float = 640.0
    #: A 32-bit shift; None: a shift costs what an add of the same width costs.
    shift_32bit_pj: Optional[float] = None
    #: Where the numbers come from, shown in the report (default: see `description`).
    source: Optional[str] = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "source" or (field.name == "shift_32bit_pj" and value is None):
                continue
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0):
                raise ValueError(f"EnergyTable.{field.name} must be a finite number of picojoules "
                                 f">= 0, got {value!r}")

    @staticmethod
    def _check_bits(bits) -> float:
        if isinstance(bits, bool) or not isinstance(bits, (int, float)) or not bits > 0:
            raise ValueError(f"an operation width must be a positive number of bits, got {bits!r}")
        return float(bits)

    def add_pj(self, bits: float) -> float:
        """An integer add of `bits` bits (piecewise linear through the 8- and 32-bit figures)."""
        b = self._check_bits(bits)
        if b <= 8:
            return self.int8_add_pj * b / 8.0
        if b >= 32:
            return self.int32_add_pj * b / 32.0
        return self.int8_add_pj + (self.int32_add_pj - self.int8_add_pj) * (b - 8.0) / 24.0

    def shift_pj(self, bits: float) -> float:
        """A shift of a `bits`-bit value: an add of that width unless `shift_32bit_pj` is set."""
        if self.shift_32bit_pj is None:
            return self.add_pj(bits)
        if self.int32_add_pj == 0:
            return self.shift_32bit_pj * self._check_bits(bits) / 32.0
        return self.shift_32bit_pj * self.add_pj(bits) / self.int32_add_pj

    def int_mul_pj(self, bits: float) -> float:
        """An integer multiply of two `bits`-bit values (quadratic in the width)."""
        return self.int8_mul_pj * (self._check_bits(bits) / 8.0) ** 2

    def read_pj(self, bits: float, memory: str) -> float:
        """Reading `bits` bits from ``"dram"`` or ``"sram"`` (linear in the bits read)."""
        check_memory(memory)
        if isinstance(bits, bool) or not bits >= 0:
            raise ValueError(f"bits read must be >= 0, got {bits!r}")
        per_32 = self.dram_read_32bit_pj if memory == "dram" else self.sram_read_32bit_pj
        return per_32 * float(bits) / 32.0

    @property
    def description(self) -> str:
        """`source` if given; else the defaults' reference, or "custom energy table"."""
        if self.source:
            return self.source
        defaults = EnergyTable()
        same = all(getattr(self, f.name) == getattr(defaults, f.name) for f in dataclasses.fields(self))
        return DEFAULT_SOURCE if same else "custom energy table"

    def to_dict(self) -> Dict:
        return dict(dataclasses.asdict(self), description=self.description)


def check_memory(memory) -> str:
    if memory not in MEMORIES:
        raise ValueError(f"memory must be 'dram' or 'sram' (where the weights are read from once "
                         f"per inference), got {memory!r}")
    return memory
