"""The architecture matrix of the README: real architectures through fix, fit, strip and export.

For MobileNetV2, ResNet50, EfficientNetB0, DenseNet121 (keras.applications, weights=None,
32x32x3, 4 classes) and a small functional Transformer encoder, the same run as
`tests/test_architectures.py` (two fixing stages in a graph-mode fit of two steps of batch 8
on random data, `strip_fixing`, palette TFLite export, interpreter; both use
`tfmot_wfn.testing.architecture_matrix`), plus a dense TFLite export for the size comparison. Prints the markdown table (and the JSON with --json).

    python benchmarks/architectures.py                      # all five, about 4 min on 2 cores
    python benchmarks/architectures.py --only Transformer --json matrix.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfmot_wfn.testing import architecture_matrix as am  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=am.ARCHITECTURES,
                        help="run only this architecture (repeatable)")
    parser.add_argument("--json", help="also write the rows (with per-step seconds) here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfmot_wfn_arch_") as tmp:
        for name in args.only or am.ARCHITECTURES:
            run = am.run_architecture(name, tmp, dense_bytes=True)
            rows.append(am.matrix_row(run))
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"{name}: seconds {rows[-1]['seconds']}, peak RSS so far {rss:.1f} GiB",
                  file=sys.stderr, flush=True)
            del run
            gc.collect()
    print(am.markdown_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
