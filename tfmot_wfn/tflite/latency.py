"""Interpreter latency of TFLite models, measured side by side in one process.

Each round invokes every interpreter once, in turn, so clock drift and
background load hit all of them alike; the median per model is reported.

```python
times = compare_latency({"float": "dense.tflite",
                         "palette as stored": ("palette.tflite", False),
                         "palette decoded": ("palette.tflite", True)}, num_threads=1)
print(times.ratio("palette decoded", "float"))
```
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

Source = Union[str, bytes, Tuple[Union[str, bytes], bool]]


@dataclasses.dataclass
class LatencyResult:
    """Median and quartiles (microseconds) of ``invoke()`` per model, and the settings."""

    median_us: Dict[str, float]
    p25_us: Dict[str, float]
    p75_us: Dict[str, float]
    runs: int
    num_threads: Optional[int]
    batch: int
    runtime: str

    def ratio(self, model: str, reference: str) -> float:
        return self.median_us[model] / self.median_us[reference]

    def __str__(self) -> str:
        lines = [f"{self.runs} rounds, batch {self.batch}, {self.num_threads} thread(s), "
                 f"{self.runtime}: median invoke() time"]
        for name, value in self.median_us.items():
            lines.append(f"  {name:<28s} {value:10.1f} us  (p25 {self.p25_us[name]:.1f}, "
                         f"p75 {self.p75_us[name]:.1f})")
        return "\n".join(lines)


def _random_inputs(interpreter, batch: int, seed: int) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = []
    for d in interpreter.get_input_details():
        shape = [batch] + [int(s) for s in d["shape"][1:]]
        if np.issubdtype(d["dtype"], np.floating):
            inputs.append(rng.random(shape).astype(d["dtype"]))
        else:
            inputs.append(np.zeros(shape, d["dtype"]))
    return inputs


def compare_latency(
    models: Mapping[str, Source],
    num_threads: Optional[int] = 1,
    runs: int = 1000,
    warmup: int = 50,
    batch: int = 1,
    runtime: Optional[str] = None,
    seed: int = 0,
) -> LatencyResult:
    """Median ``invoke()`` latency of several models, interleaved in one process.

    Args:
      models: name -> path or bytes (loaded with decode=True) or ``(path, decode)``.
      num_threads: interpreter threads (1 by default, as on a phone's single core).
      runs: measured rounds; warmup: rounds run first and not measured.
      batch: the batch size of the random input.
    """
    from tfmot_wfn.tflite.runtime import load_interpreter, runtime_name

    interpreters = {}
    for name, source in models.items():
        path, decode = source if isinstance(source, tuple) else (source, True)
        interpreter = load_interpreter(path, decode=decode, num_threads=num_threads,
                                       runtime=runtime)
        inputs = _random_inputs(interpreter, batch, seed)
        details = interpreter.get_input_details()
        if batch != int(details[0]["shape"][0]):
            for d, x in zip(details, inputs):
                interpreter.resize_tensor_input(d["index"], list(x.shape))
            interpreter.allocate_tensors()
        for d, x in zip(interpreter.get_input_details(), inputs):
            interpreter.set_tensor(d["index"], x)
        interpreters[name] = interpreter
    samples = {name: np.empty(runs, np.float64) for name in interpreters}
    for i in range(warmup + runs):
        for name, interpreter in interpreters.items():
            start = time.perf_counter_ns()
            interpreter.invoke()
            elapsed = time.perf_counter_ns() - start
            if i >= warmup:
                samples[name][i - warmup] = elapsed / 1000.0
    first = next(iter(interpreters.values()))
    return LatencyResult(
        median_us={n: float(np.median(s)) for n, s in samples.items()},
        p25_us={n: float(np.percentile(s, 25)) for n, s in samples.items()},
        p75_us={n: float(np.percentile(s, 75)) for n, s in samples.items()},
        runs=runs, num_threads=num_threads, batch=batch, runtime=runtime_name(first))
