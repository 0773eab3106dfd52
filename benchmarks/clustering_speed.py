"""Speed and peak memory of the whole-network greedy fixing (tfmot_wfn.core.fixing_stage).

Measures, for N weights drawn like a freshly initialised ResNet:

* ``stage 0``: one fixing stage (fraction 0.3, distance 10 * delta), the issue's target
  being <= 10 s and <= 2 GiB peak at N = 25.6M (ResNet-50);
* ``full schedule``: the paper's 10 stages (fractions 0.3 ... 1.0, distance
  delta * max(1, 10 - i), delta = 0.015), the free weights perturbed by small
  gaussian noise between stages to mimic re-training, each stage offered the
  previous palette (as ``tfmot_wfn.keras.network`` does);
* the slow dense reference (``tfmot_wfn.testing.reference_fixing.reference_stage``), stage 0 and
  the full schedule, at small N next to the fast one at the same N, for the speed-up
  ratio (and a check, in a separate subprocess, that both give the same result).

Every (N, what) is measured in two fresh subprocesses so that peaks never mix:
one for wall time and ``resource.getrusage`` max-RSS delta (no tracing), one for
the ``tracemalloc`` peak (numpy reports its buffers to tracemalloc).

    PYTHONPATH=. python3 benchmarks/clustering_speed.py            # 1M, 5M, 25.6M; reference at 20k, 100k, 1M
    PYTHONPATH=. python3 benchmarks/clustering_speed.py --quick    # 1M; reference at 20k, 100k (~30 s)
    PYTHONPATH=. python3 benchmarks/clustering_speed.py --sizes 1M,25.6M --reference-sizes 20k

Writes ``benchmarks/clustering_speed.md`` (or ``--output``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(ROOT, "benchmarks", "clustering_speed.md")

PAPER_FRACTIONS = [0.3, 0.6, 0.8, 0.9, 0.95, 0.975, 0.99, 0.9975, 0.999, 1.0]
DELTA = 0.015
STAGE0 = (0.3, 10 * DELTA)
TARGET_SECONDS = 10.0
TARGET_MIB = 2048.0

# ----------------------------------------------------------------------------- architectures
# (name, shape, kind) in Keras layout: conv kernels (kh, kw, in, out), dense (in, out).
# kind: "kernel" (He-normal, std sqrt(2 / fan_in)), "gamma" (BN scale ~ 1),
# "beta" (BN shift ~ 0), "bias" (~ 0). torchvision ResNets: convs without bias.


def _conv(name, k, cin, cout):
    return [(name, (k, k, cin, cout), "kernel")]


def _bn(name, c):
    return [(name + "/gamma", (c,), "gamma"), (name + "/beta", (c,), "beta")]


def resnet18_layers():
    layers = _conv("conv1", 7, 3, 64) + _bn("bn1", 64)
    cin = 64
    for stage, width in enumerate([64, 128, 256, 512], start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            layers += _conv(p + ".conv1", 3, cin, width) + _bn(p + ".bn1", width)
            layers += _conv(p + ".conv2", 3, width, width) + _bn(p + ".bn2", width)
            if block == 0 and cin != width:
                layers += _conv(p + ".downsample", 1, cin, width) + _bn(p + ".downsample_bn", width)
            cin = width
    layers += [("fc/kernel", (512, 1000), "kernel"), ("fc/bias", (1000,), "bias")]
    return layers


def resnet50_layers():
    layers = _conv("conv1", 7, 3, 64) + _bn("bn1", 64)
    cin = 64
    for stage, (width, blocks) in enumerate(zip([64, 128, 256, 512], [3, 4, 6, 3]), start=1):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            layers += _conv(p + ".conv1", 1, cin, width) + _bn(p + ".bn1", width)
            layers += _conv(p + ".conv2", 3, width, width) + _bn(p + ".bn2", width)
            layers += _conv(p + ".conv3", 1, width, 4 * width) + _bn(p + ".bn3", 4 * width)
            if block == 0:
                layers += _conv(p + ".downsample", 1, cin, 4 * width) + _bn(p + ".downsample_bn", 4 * width)
            cin = 4 * width
    layers += [("fc/kernel", (2048, 1000), "kernel"), ("fc/bias", (1000,), "bias")]
    return layers


def _count(layers):
    total = 0
    for _, shape, _ in layers:
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


RESNET18_PARAMS = 11_689_512
RESNET50_PARAMS = 25_557_032
assert _count(resnet18_layers()) == RESNET18_PARAMS, _count(resnet18_layers())
assert _count(resnet50_layers()) == RESNET50_PARAMS, _count(resnet50_layers())


def layers_for(n):
    """Layer list summing to exactly n weights: ResNet-50 if n is its size (or more,
    tiled), otherwise a prefix/tiling of ResNet-18's layers, the last one cut."""
    base = resnet50_layers() if n >= RESNET50_PARAMS else resnet18_layers()
    out, total, rep = [], 0, 0
    while total < n:
        for name, shape, kind in base:
            size = _count([(name, shape, kind)])
            take = min(size, n - total)
            out.append((f"{name}#{rep}" if rep else name, shape, kind, take))
            total += take
            if total >= n:
                break
        rep += 1
    return out


def make_weights(n, seed=0):
    """float32 weights, one network-wide pool, generated layer by layer in place."""
    import numpy as np

    rng = np.random.default_rng(seed)
    w = np.empty(n, np.float32)
    offset = 0
    for _, shape, kind, take in layers_for(n):
        part = w[offset:offset + take]
        rng.standard_normal(out=part, dtype=np.float32)
        if kind == "kernel":
            fan_in = 1
            for s in shape[:-1]:
                fan_in *= s
            part *= np.float32(np.sqrt(2.0 / fan_in))
        elif kind == "gamma":
            part *= np.float32(0.05)
            part += np.float32(1.0)
        elif kind == "beta":
            part *= np.float32(0.05)
        else:  # bias
            part *= np.float32(0.01)
        offset += take
    return w


# ----------------------------------------------------------------------------- one measurement (child)


def _import_core():
    """The numpy core only (`tfmot_wfn` imports its Keras/TensorFlow parts lazily)."""
    import importlib

    gf = importlib.import_module("tfmot_wfn.core.greedy_fixing")
    assert "tensorflow" not in sys.modules, "the benchmark must not pay for TensorFlow"
    return gf


def _perturb(values, fixed, rng):
    """Mimic re-training between stages: 1% multiplicative gaussian noise on free weights."""
    import numpy as np

    free = np.flatnonzero(~fixed)
    noise = rng.standard_normal(free.size, dtype=np.float32)
    noise *= np.float32(0.01)
    noise += np.float32(1.0)
    values[free] *= noise


def child(spec):
    import resource
    import tracemalloc

    import numpy as np

    gf = _import_core()
    n, what, mode = spec["n"], spec["what"], spec["mode"]
    w = make_weights(n, seed=spec.get("seed", 0))
    rng = np.random.default_rng(1)
    if what.startswith("reference") or mode == "check":
        from tfmot_wfn.testing.reference_fixing import reference_stage

    trace = mode == "tracemalloc"
    check = mode == "check"  # also run the dense reference and compare (never timed)
    if trace:
        tracemalloc.start()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    traced0 = tracemalloc.get_traced_memory()[0] if trace else 0
    peak, seconds, steps, orders = 0, 0.0, 0, 0
    out = {}
    if what == "stage0":
        t = time.perf_counter()
        r = gf.fixing_stage(w, None, *STAGE0)
        seconds = time.perf_counter() - t
        steps, orders, palette = r.steps, r.max_order, r.palette.size
        out["fixed"] = int(r.fixed.sum())
        if check:
            rv, rfx = reference_stage(w, None, *STAGE0)
            out["equal_to_reference"] = bool(np.array_equal(rv, r.values) and np.array_equal(rfx, r.fixed))
        if trace:
            peak = tracemalloc.get_traced_memory()[1]
    elif what == "reference":
        t = time.perf_counter()
        rv, rfx = reference_stage(w, None, *STAGE0)
        seconds = time.perf_counter() - t
        palette = int(np.unique(rv[rfx]).size)
        out["fixed"] = int(rfx.sum())
        steps = orders = None  # the reference does not report them
        if trace:
            peak = tracemalloc.get_traced_memory()[1]
    elif what in ("full", "reference_full"):
        values, fixed, pal = w, np.zeros(n, bool), None
        stage_seconds = []
        equal = True
        for i, fraction in enumerate(PAPER_FRACTIONS):
            if i:
                _perturb(values, fixed, rng)
            if trace:
                tracemalloc.reset_peak()
            distance = DELTA * max(1, 10 - i)
            t = time.perf_counter()
            if what == "full":
                r = gf.fixing_stage(values, fixed, fraction, distance, palette=pal)
                new_values, new_fixed = r.values, r.fixed
            else:
                new_values, new_fixed = reference_stage(values, fixed, fraction, distance, palette=pal)
            dt = time.perf_counter() - t
            if trace:
                peak = max(peak, tracemalloc.get_traced_memory()[1])
            if what == "full":
                steps += r.steps
                orders = max(orders, r.max_order)
                if check:
                    rv, rfx = reference_stage(values, fixed, fraction, distance, palette=pal)
                    equal = equal and bool(np.array_equal(rv, new_values) and np.array_equal(rfx, new_fixed))
                del r
            seconds += dt
            stage_seconds.append(round(dt, 3))
            del values, fixed
            values, fixed = new_values, new_fixed
            pal = np.unique(values[fixed]).astype(np.float32)
        if what == "full" and check:
            out["equal_to_reference"] = equal
        palette = pal.size
        out["stage_seconds"] = stage_seconds
        out["fixed"] = int(fixed.sum())
        out["unique_nonzero"] = int(np.count_nonzero(pal))
    else:
        raise ValueError(what)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.update(
        n=n, what=what, mode=mode, seconds=seconds, steps=steps, max_order=orders, palette=int(palette),
        input_mib=w.nbytes / 2**20,
        rss_delta_mib=(rss1 - rss0) / 1024.0,  # Linux: kilobytes
        rss_peak_mib=rss1 / 1024.0,
        traced_peak_mib=peak / 2**20 if trace else None,
        traced_before_mib=traced0 / 2**20 if trace else None,
    )
    print("RESULT " + json.dumps(out))


def run_child(spec, timeout):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    t = time.time()
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
        capture_output=True, text=True, env=env, timeout=timeout,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
            res["process_seconds"] = time.time() - t
            return res
    raise RuntimeError(f"child {spec} failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


# ----------------------------------------------------------------------------- driver


def parse_size(text):
    text = text.strip().lower()
    mult = 1
    if text.endswith("k"):
        mult, text = 1_000, text[:-1]
    elif text.endswith("m"):
        mult, text = 1_000_000, text[:-1]
    n = int(round(float(text) * mult))
    return RESNET50_PARAMS if n == 25_600_000 else n  # "25.6M" means ResNet-50 exactly


def label(n):
    if n == RESNET50_PARAMS:
        return "25.6M (ResNet-50)"
    if n >= 1_000_000:
        return f"{n / 1e6:g}M (ResNet-18 layers)"
    return f"{n / 1e3:g}k (ResNet-18 layers)"


def measure(n, what, timeout, check_reference=False):
    spec = {"n": n, "what": what, "mode": "time"}
    print(f"  N={n:>10,} {what:<14} timing ...", file=sys.stderr, flush=True)
    timed = run_child(spec, timeout)
    print(f"  N={n:>10,} {what:<14} {timed['seconds']:.2f} s; tracemalloc ...", file=sys.stderr, flush=True)
    traced = run_child(dict(spec, mode="tracemalloc"), timeout)
    if check_reference:
        print(f"  N={n:>10,} {what:<14} comparing with the dense reference ...", file=sys.stderr, flush=True)
        timed["equal_to_reference"] = run_child(dict(spec, mode="check"), timeout)["equal_to_reference"]
    timed["traced_peak_mib"] = traced["traced_peak_mib"]
    timed["traced_before_mib"] = traced["traced_before_mib"]
    timed["traced_seconds"] = traced["seconds"]
    return timed


def table(rows):
    head = ("| N | what | seconds | peak MiB (tracemalloc) | max-RSS delta MiB | steps | max order "
            "| palette size | speed-up vs reference |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        what = {"stage0": "fast, stage 0", "full": "fast, full schedule (10 stages)",
                "reference": "dense reference, stage 0",
                "reference_full": "dense reference, full schedule"}[r["what"]]
        ratio = r.get("ratio")
        lines.append(
            f"| {label(r['n'])} | {what} | {r['seconds']:.3f} | {r['traced_peak_mib']:.0f} "
            f"| {r['rss_delta_mib']:.0f} | {r['steps']} | {r['max_order']} | {r['palette']} "
            f"| {'' if ratio is None else f'{ratio:.0f}x' if ratio >= 10 else f'{ratio:.1f}x'} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1M only, with the small reference sizes (CI smoke)")
    parser.add_argument("--sizes", default=None, help="comma list of N, e.g. 1M,5M,25.6M")
    parser.add_argument("--reference-sizes", default=None,
                        help="comma list of N for the dense reference (default 20k,100k,1M; --quick: 20k,100k)")
    parser.add_argument("--no-full", action="store_true", help="skip the full 10-stage schedule")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--timeout", type=float, default=3600.0, help="per-subprocess timeout, seconds")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0

    sizes = [parse_size(s) for s in (args.sizes or ("1M" if args.quick else "1M,5M,25.6M")).split(",") if s]
    ref_default = "20k,100k" if args.quick else "20k,100k,1M"
    ref_sizes = [parse_size(s) for s in (args.reference_sizes or ref_default).split(",") if s]
    rows = []
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for n in ref_sizes:
        pairs = [("reference", "stage0")] + ([] if args.no_full else [("reference_full", "full")])
        for ref_what, fast_what in pairs:
            fast = measure(n, fast_what, args.timeout, check_reference=True)
            ref = measure(n, ref_what, args.timeout)
            fast["ratio"] = ref["seconds"] / max(fast["seconds"], 1e-9)
            ref["ratio"] = 1.0
            ref["steps"], ref["max_order"] = fast["steps"], fast["max_order"]  # same greedy run
            rows += [ref, fast]
    done = {(r["n"], r["what"]) for r in rows}
    for n in sizes:
        for what in ["stage0"] + ([] if args.no_full else ["full"]):
            if (n, what) not in done:  # already measured next to the reference
                rows.append(measure(n, what, args.timeout))

    import numpy as np

    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = [
        "# Greedy fixing: speed and peak memory",
        "",
        f"Generated by `benchmarks/clustering_speed.py{' --quick' if args.quick else ''}` on "
        f"{platform.machine()} with {os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__} "
        f"(1-minute load average {load_before:.1f} at the start, {load_after:.1f} at the end; timings on a "
        "shared machine vary with it).",
        "",
        "Weights: the real parameter shapes of ResNet-18 (11,689,512; sizes up to ~12M take a prefix of its "
        "layers) and ResNet-50 (25,557,032), kernels He-normal (std sqrt(2/fan_in)), BatchNorm gamma ~ 1 + "
        "0.05 N(0,1), beta and biases ~ small noise. One network-wide pool, as `run_fixing_stage` builds it.",
        "",
        f"* stage 0: `fixing_stage(w, None, fraction={STAGE0[0]}, distance={STAGE0[1]:g})`;",
        f"* full schedule: fractions {PAPER_FRACTIONS}, distance {DELTA} * max(1, 10 - i), free weights "
        "multiplied by 1 + 0.01 N(0,1) between stages, each stage given the previous palette; seconds = sum "
        "of the 10 `fixing_stage` calls (noise excluded), peak = the highest stage;",
        "* each row comes from two fresh subprocesses: wall time and `getrusage` max-RSS delta (peak resident "
        "memory above the high-water mark before the call; the input weights are already resident) in one, "
        "the `tracemalloc` peak (all numpy buffers alive during the call, the caller's input "
        "included) in the other;",
        "* speed-up = dense reference seconds / fast seconds at the same N, same run (the reference rows "
        "show the fast run's steps and order: both take the same greedy steps).",
        "",
        table(rows),
        "",
    ]
    checks = [r for r in rows if "equal_to_reference" in r]
    if checks:
        text.append("Fast result equal to the dense reference (values and mask): "
                    + ", ".join(f"N={r['n']:,} {'stage 0' if r['what'] == 'stage0' else 'all 10 stages'}: "
                                f"{'yes' if r['equal_to_reference'] else 'NO'}" for r in checks) + ".")
        text.append("")
    for r in rows:
        if r["what"] == "full":
            text.append(f"Per-stage seconds at N={r['n']:,}: {r['stage_seconds']}; palette {r['palette']} values "
                        f"({r['unique_nonzero']} non-zero).")
    target = [r for r in rows if r["what"] == "stage0" and r["n"] == RESNET50_PARAMS]
    if target:
        r = target[0]
        ok_t, ok_m = r["seconds"] <= TARGET_SECONDS, r["traced_peak_mib"] <= TARGET_MIB
        text += ["", f"Target (one stage at 25.6M <= {TARGET_SECONDS:g} s and <= {TARGET_MIB / 1024:g} GiB): "
                 f"{r['seconds']:.2f} s {'met' if ok_t else 'MISSED'}, {r['traced_peak_mib']:.0f} MiB traced peak "
                 f"({r['rss_peak_mib']:.0f} MiB process max-RSS) {'met' if ok_m else 'MISSED'}."]
    md = "\n".join(text).rstrip() + "\n"
    with open(args.output, "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
