"""What a network costs to run, estimated from operation counts (pure numpy).

The same network in three forms, side by side:

* **float32**: every multiply-accumulate (MAC) is an fp32 multiply and an fp32 add;
  weights stored and read at 32 bits;
* **int8**: an int8 multiply and an int32 add per MAC; weights at 8 bits (biases
  int32, as in TFLite);
* **shift-add**: each non-zero weight with k signed power-of-two terms costs k
  shifts and k - 1 adds at `activation_bits` fixed point, then the accumulate (a
  32-bit add); zero weights are skipped; weights stored as palette indices of
  ceil(log2 K) bits (K distinct values in the network; entropy-coded: H bits).
  It applies only when every non-zero weight has at most `max_terms` terms (a
  fixed network); otherwise the estimate says so instead of inventing terms.

Activation-activation products (attention's QK^T and AV) stay fp32 in every form.
Weights are read once per inference from DRAM or SRAM at their stored width.
What is not counted: activations and their memory traffic, palette decoding,
control, softmax, normalization, pooling and other elementwise work.
The Keras side (`tfmot_wfn.keras.hardware_cost`) turns a model into `LayerWork`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from tfmot_wfn.core.energy_table import EnergyTable, check_memory
from tfmot_wfn.core.weight_statistics import entropy_of_counts, value_counts
from tfmot_wfn.core.weight_terms import DEFAULT_MAX_TERMS, term_counts
from tfmot_wfn.utils.json_report import JsonReport

ROLES = ("multiply", "bias", "lookup")
FORMS = ("float32", "int8", "shift_add")
STORAGE_FORMS = ("float32", "int8", "palette", "entropy_coded")
ACCUMULATOR_BITS = 32
ESTIMATE_NOTE = ("An estimate from operation counts and a per-operation energy table (batch 1, "
                 "weights read once per inference): it leaves out activations and their memory "
                 "traffic, palette decoding, control and elementwise work, and real hardware "
                 "differs (data reuse, caches, parallelism); compare forms, not absolute joules.")


@dataclasses.dataclass
class WeightGroup:
    """One weight tensor of a layer and how often an inference uses it.

    role ``"multiply"``: each weight is multiplied `uses` times (MACs = uses x size);
    ``"bias"``: each value is added `uses` times; ``"lookup"`` (an embedding table):
    `uses` rows are read, no arithmetic.
    """

    name: str
    values: np.ndarray
    role: str
    uses: int

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"WeightGroup.role must be one of {ROLES}, got {self.role!r}")
        self.values = np.asarray(self.values)
        if int(self.uses) < 0:
            raise ValueError(f"WeightGroup.uses must be >= 0, got {self.uses!r}")
        self.uses = int(self.uses)

    @property
    def reads(self) -> int:
        """Weight values read per inference (a lookup reads only the rows it needs)."""
        if self.role == "lookup":
            return self.uses * (int(self.values.shape[-1]) if self.values.ndim else 1)
        return int(self.values.size)


@dataclasses.dataclass
class LayerWork:
    """The weighted work of one layer per inference (batch 1)."""

    layer: str
    kind: str
    groups: List[WeightGroup]
    #: Activation-activation products (attention), counted as fp32 MACs in every form.
    float_macs: int = 0


@dataclasses.dataclass(frozen=True)
class _Terms:
    """The distinct multiplied values of a group, how many weights hold each, and their
    power-of-two term counts (counted once per distinct value, not per weight)."""

    values: np.ndarray
    counts: np.ndarray
    terms: np.ndarray
    source: np.ndarray  # the group's weights

    @classmethod
    def of(cls, group: WeightGroup) -> "_Terms":
        if group.role != "multiply" or group.values.size == 0:
            empty = np.zeros(0, np.int64)
            return cls(np.zeros(0), empty, empty, np.zeros(0))
        values, counts = np.unique(group.values, return_counts=True)
        return cls(values, counts, term_counts(values), group.values)

    def first_over(self, max_terms: int) -> float:
        """The first weight (flat order) with more than `max_terms` terms, or nan."""
        over = self.values[self.terms > max_terms]
        if over.size == 0:
            return float("nan")
        flat = self.source.ravel()
        return float(np.asarray(flat[np.argmax(np.isin(flat, over))], np.float64))

    def total(self) -> int:
        return int((self.terms * self.counts).sum())

    def over(self, max_terms: int) -> int:
        return int(self.counts[self.terms > max_terms].sum())


def _group_counts(group: WeightGroup, terms: "_Terms", c: Dict[str, int]) -> None:
    size = int(group.values.size)
    nonzero = int(np.count_nonzero(group.values))
    if group.role == "lookup":
        c["lookups"] += group.uses
        c["reads_weights"] += group.reads
        return
    if group.role == "bias":
        c["bias_adds"] += group.uses * size
        c["bias_adds_nonzero"] += group.uses * nonzero
        c["reads_bias"] += size
        return
    c["macs"] += group.uses * size
    c["skipped_macs"] += group.uses * (size - nonzero)
    total_terms = terms.total()
    c["shifts"] += group.uses * total_terms
    c["term_adds"] += group.uses * (total_terms - nonzero)
    c["accumulates"] += group.uses * nonzero
    c["reads_weights"] += size


COUNT_KEYS = ("weights", "macs", "skipped_macs", "float_macs", "bias_adds", "bias_adds_nonzero",
              "lookups", "shifts", "term_adds", "accumulates", "reads_weights", "reads_bias",
              "weights_over_max_terms")


def layer_counts(work: LayerWork, max_terms: int,
                 terms: Optional[Sequence["_Terms"]] = None) -> Dict[str, int]:
    """Operation counts of one layer (see `COUNT_KEYS`); adds = term adds + accumulates + bias
    adds. `terms`: the groups' `_Terms` when the caller has them already."""
    c = dict.fromkeys(COUNT_KEYS, 0)
    c["float_macs"] = int(work.float_macs)
    terms = [_Terms.of(g) for g in work.groups] if terms is None else terms
    for group, group_terms in zip(work.groups, terms):
        c["weights"] += int(group.values.size)
        c["weights_over_max_terms"] += group_terms.over(max_terms)
        _group_counts(group, group_terms, c)
    return c


def _bits_moved(c: Dict[str, int], index_bits: float, entropy: float) -> Dict[str, float]:
    reads = c["reads_weights"] + c["reads_bias"]
    return {"float32": 32.0 * reads, "int8": 8.0 * c["reads_weights"] + 32.0 * c["reads_bias"],
            "palette": float(index_bits) * reads, "entropy_coded": float(entropy) * reads}


def _compute_pj(c: Dict[str, int], table: EnergyTable, activation_bits: int) -> Dict[str, float]:
    attention = c["float_macs"] * (table.fp32_mul_pj + table.fp32_add_pj)
    acc = table.add_pj(ACCUMULATOR_BITS)
    return {
        "float32": c["macs"] * (table.fp32_mul_pj + table.fp32_add_pj)
        + c["bias_adds"] * table.fp32_add_pj + attention,
        "int8": c["macs"] * (table.int8_mul_pj + table.int32_add_pj)
        + c["bias_adds"] * table.int32_add_pj + attention,
        "shift_add": c["shifts"] * table.shift_pj(activation_bits)
        + c["term_adds"] * table.add_pj(activation_bits)
        + (c["accumulates"] + c["bias_adds_nonzero"]) * acc + attention,
    }


def _energy(c, bits_moved, table, activation_bits, memory) -> Dict[str, Dict[str, float]]:
    compute = _compute_pj(c, table, activation_bits)
    read = {form: table.read_pj(bits, memory) for form, bits in bits_moved.items()}
    total = {"float32": compute["float32"] + read["float32"], "int8": compute["int8"] + read["int8"],
             "shift_add": compute["shift_add"] + read["palette"]}
    return {"compute_pj": compute, "weight_read_pj": read, "energy_pj": total}


def _layer_row(work: LayerWork, c: Dict[str, int], energy: Dict, applies: bool) -> Dict:
    adds = c["term_adds"] + c["accumulates"] + c["bias_adds_nonzero"]
    return {"layer": work.layer, "class": work.kind, "weights": c["weights"], "macs": c["macs"],
            "float_macs": c["float_macs"], "lookups": c["lookups"],
            "skipped_macs": c["skipped_macs"],
            "skipped_share": c["skipped_macs"] / c["macs"] if c["macs"] else 0.0,
            "shifts": c["shifts"] if applies else None, "adds": adds if applies else None,
            "shift_add_applies": applies,
            "energy_pj": {k: (v if k != "shift_add" or applies else None)
                          for k, v in energy["energy_pj"].items()}}


def _shift_add_note(over: int, nonzero: int, max_terms: int, example: float) -> str:
    if nonzero == 0:
        return "no non-zero multiplied weights"
    if over == 0:
        return f"every non-zero weight is a sum of at most {max_terms} signed powers of two"
    return (f"{over:,} of {nonzero:,} non-zero weights ({over / nonzero:.1%}) are not sums of at most "
            f"{max_terms} signed powers of two (e.g. {example:.9g}): the shift-add form does not "
            "apply; fix the network first (tfmot_wfn.fix_weights) or raise max_terms")


def _check_args(activation_bits, memory, max_terms, table) -> EnergyTable:
    if (isinstance(activation_bits, bool) or not isinstance(activation_bits, int)
            or not 1 <= activation_bits <= 64):
        raise ValueError(f"activation_bits must be an integer in [1, 64] (the fixed-point width of the "
                         f"shifted activations), got {activation_bits!r}")
    if isinstance(max_terms, bool) or not isinstance(max_terms, int) or max_terms < 1:
        raise ValueError(f"max_terms must be a positive integer, got {max_terms!r}")
    check_memory(memory)
    table = EnergyTable() if table is None else table
    if not isinstance(table, EnergyTable):
        raise TypeError(f"energy_table must be a tfmot_wfn.EnergyTable, got {type(table).__name__}")
    return table


def _palette_stats(layers: Sequence[LayerWork]):
    """(K distinct values, index bits ceil(log2 K), entropy H) over every counted weight."""
    parts = [g.values.astype(np.float32).ravel() for w in layers for g in w.groups]
    values = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    counts = value_counts(values)[1]
    k = int(counts.size)
    index_bits = max(1, math.ceil(math.log2(k))) if k else 0
    return k, index_bits, entropy_of_counts(counts)


def _stored_bits(layers: Sequence[LayerWork], index_bits: int, entropy: float) -> Dict[str, float]:
    sizes = {"reads_weights": 0, "reads_bias": 0}
    for g in (g for w in layers for g in w.groups):
        sizes["reads_bias" if g.role == "bias" else "reads_weights"] += int(g.values.size)
    return _bits_moved(sizes, index_bits, entropy)


def _shift_add_summary(terms: Sequence["_Terms"], max_terms: int):
    """(note, {terms: weights}) over the multiplied weights of the network (the groups'
    `_Terms`)."""
    over = sum(t.over(max_terms) for t in terms)
    nonzero = sum(int(t.counts[t.values != 0].sum()) for t in terms)
    example = next((t.first_over(max_terms) for t in terms if t.over(max_terms)), float("nan"))
    histogram: Dict[int, int] = {}
    for t in terms:
        for k, n in zip(t.terms[t.terms > 0], t.counts[t.terms > 0]):
            histogram[int(k)] = histogram.get(int(k), 0) + int(n)
    note = _shift_add_note(over, nonzero, max_terms, example)
    return note, {str(k): histogram[k] for k in sorted(histogram)}


def estimate(layers: Sequence[LayerWork], energy_table: Optional[EnergyTable] = None, *,
             activation_bits: int = 16, memory: str = "dram", max_terms: int = DEFAULT_MAX_TERMS,
             not_counted: Sequence[Dict] = (), input_shape=None) -> "HardwareCost":
    """The hardware cost of `layers` in the float32, int8 and shift-add forms."""
    table = _check_args(activation_bits, memory, max_terms, energy_table)
    terms = [[_Terms.of(g) for g in w.groups] for w in layers]
    counts = [layer_counts(w, max_terms, t) for w, t in zip(layers, terms)]
    k, index_bits, entropy = _palette_stats(layers)
    rows = []
    for work, c in zip(layers, counts):
        e = _energy(c, _bits_moved(c, index_bits, entropy), table, activation_bits, memory)
        rows.append(_layer_row(work, c, e, c["weights_over_max_terms"] == 0))
    totals = {key: sum(c[key] for c in counts) for key in COUNT_KEYS}
    applies = totals["weights_over_max_terms"] == 0
    moved = _bits_moved(totals, index_bits, entropy)
    energy = _energy(totals, moved, table, activation_bits, memory)
    total_row = _layer_row(LayerWork("total", "", []), totals, energy, applies)
    if not applies:
        energy["energy_pj"]["shift_add"] = energy["compute_pj"]["shift_add"] = None
    note, histogram = _shift_add_summary([t for group in terms for t in group], max_terms)
    return HardwareCost(
        input_shape=input_shape, activation_bits=activation_bits, memory=memory, max_terms=max_terms,
        energy_table=table.to_dict(), layers=rows, totals=total_row, palette_size=k,
        bits_per_weight={"float32": 32.0, "int8": 8.0, "palette": float(index_bits),
                         "entropy_coded": float(entropy)},
        storage_bytes={f: b / 8.0 for f, b in _stored_bits(layers, index_bits, entropy).items()},
        weight_bits_moved=moved, compute_pj=energy["compute_pj"],
        weight_read_pj=energy["weight_read_pj"], energy_pj=energy["energy_pj"],
        shift_add_applies=applies, shift_add_note=note, terms_histogram=histogram,
        not_counted=list(not_counted))


def _fmt_count(n) -> str:
    return "n/a" if n is None else f"{n:,}"


def _fmt_pj(pj) -> str:
    if pj is None:
        return "n/a"
    for unit, scale in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"


@dataclasses.dataclass
class HardwareCost(JsonReport):
    """Estimated cost of one inference (batch 1) in the float32, int8 and shift-add forms.

    `str(cost)` is a readable table; `to_dict()` / `to_json(path)` the numbers.
    Energies are in picojoules; ``None`` where the shift-add form does not apply.
    """

    input_shape: object
    activation_bits: int
    memory: str
    max_terms: int
    energy_table: Dict
    #: per layer: layer, class, weights, macs, float_macs, lookups, skipped_macs,
    #: skipped_share, shifts, adds, shift_add_applies, energy_pj {float32, int8, shift_add}
    layers: List[Dict]
    totals: Dict
    palette_size: int
    bits_per_weight: Dict[str, float]
    storage_bytes: Dict[str, float]
    weight_bits_moved: Dict[str, float]
    compute_pj: Dict[str, Optional[float]]
    weight_read_pj: Dict[str, float]
    energy_pj: Dict[str, Optional[float]]
    shift_add_applies: bool
    shift_add_note: str
    terms_histogram: Dict[str, int]
    #: layers whose work is not counted: ``{"layer", "class", "reason"}``
    not_counted: List[Dict] = dataclasses.field(default_factory=list)
    note: str = ESTIMATE_NOTE

    def __str__(self) -> str:
        return "\n".join(_text_lines(self))


def _text_lines(cost: HardwareCost) -> List[str]:
    t = cost.totals
    lines = [f"hardware cost per inference (batch 1, input {cost.input_shape}, activations "
             f"{cost.activation_bits}-bit for shift-add, weights read once from "
             f"{cost.memory.upper()}; {cost.energy_table['description']}):",
             f"  {'layer':<26s} {'class':<20s} {'MACs':>12s} {'skipped':>8s} {'shifts':>12s} "
             f"{'adds':>12s} {'float32':>9s} {'int8':>9s} {'shift-add':>9s}"]
    for r in cost.layers + [t]:
        e = r["energy_pj"]
        lines.append(f"  {r['layer'][:26]:<26s} {r['class'][:20]:<20s} {_fmt_count(r['macs']):>12s} "
                     f"{r['skipped_share']:>8.1%} {_fmt_count(r['shifts']):>12s} "
                     f"{_fmt_count(r['adds']):>12s} {_fmt_pj(e['float32']):>9s} "
                     f"{_fmt_pj(e['int8']):>9s} {_fmt_pj(e['shift_add']):>9s}")
    if t["float_macs"]:
        lines.append(f"  attention activation x activation products (fp32 in every form): "
                     f"{t['float_macs']:,} MACs")
    if t["lookups"]:
        lines.append(f"  embedding lookups: {t['lookups']:,} rows (no MACs)")
    b, s, m = cost.bits_per_weight, cost.storage_bytes, cost.weight_bits_moved
    lines.append(f"  weights: {t['weights']:,}; palette K={cost.palette_size}; bits per weight "
                 f"float32 32, int8 8 (biases 32), palette index {b['palette']:g}, entropy-coded "
                 f"{b['entropy_coded']:.2f}")
    lines.append("  stored bytes: " + ", ".join(f"{f} {s[f]:,.0f}" for f in STORAGE_FORMS))
    lines.append("  weight bits moved per inference: "
                 + ", ".join(f"{f} {m[f]:,.0f}" for f in STORAGE_FORMS))
    e = cost.energy_pj
    lines.append(f"  energy per inference: float32 {_fmt_pj(e['float32'])}, int8 {_fmt_pj(e['int8'])}, "
                 f"shift-add {_fmt_pj(e['shift_add'])} (weight reads: "
                 + ", ".join(f"{f} {_fmt_pj(cost.weight_read_pj[f])}" for f in STORAGE_FORMS) + ")")
    hist = ", ".join(f"{k} term{'s' if k != '1' else ''}: {n:,}" for k, n in cost.terms_histogram.items())
    shown = f" ({hist})" if hist and cost.shift_add_applies else ""
    lines.append(f"  shift-add: {cost.shift_add_note}{shown}")
    groups: Dict[tuple, List[str]] = {}
    for entry in cost.not_counted:
        groups.setdefault((entry["class"], entry["reason"]), []).append(entry["layer"])
    if groups:
        lines.append("  not counted:")
        for (cls, reason), names in groups.items():
            shown = ", ".join(names[:4]) + (f", ... ({len(names)} layers)" if len(names) > 4 else "")
            lines.append(f"    {cls} ({shown}): {reason}")
    lines.append(cost.note)
    return lines
