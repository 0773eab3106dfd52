"""Command line: ``tfmot-wfn demo | export | inspect``.

``demo`` runs the main job on built-in data; ``export`` writes a fixed ``.keras``
model as a palette TFLite file, a dense TFLite file or an entropy-coded archive;
``inspect`` describes a palette TFLite file or an archive.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfmot-wfn",
        description="Weight Fixing Networks for Keras: few unique weights, low entropy, "
                    "powers of two, no accuracy loss.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="train a small CNN on scikit-learn digits and fix its weights",
        description="Train a small CNN with BatchNorm on scikit-learn's digits, run the "
                    "paper's ten-stage WFN schedule, print accuracy, unique values, entropy "
                    "and the palette, and write fixed_model.keras and report.json.")
    demo.add_argument("--output", default="wfn_demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--distance", type=_positive_float, default=None,
                      help="delta, the allowed relative distance (default: tfmot_wfn.DEFAULT_DISTANCE)")
    demo.add_argument("--float-epochs", type=_positive_int, default=30,
                      help="epochs of float training (default: %(default)s)")
    demo.add_argument("--epochs-per-stage", type=_positive_int, default=2,
                      help="re-training epochs between fixing stages (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="print nothing")

    export = sub.add_parser(
        "export", help="write a fixed .keras model as palette/dense TFLite or an archive",
        description="Export a model saved by tfmot_wfn (wrapped mid-training or stripped) as a "
                    "palette TFLite file (weights are indices into one shared palette), a dense "
                    "float TFLite file, or an entropy-coded archive (.wfn).")
    export.add_argument("model", help="path of the .keras model")
    export.add_argument("--format", choices=("palette", "dense", "archive"), default="palette",
                        help="output format (default: %(default)s)")
    export.add_argument("--output", default=None,
                        help="output path (default: the model path with .tflite or .wfn)")
    export.add_argument("--quiet", action="store_true", help="print nothing")

    inspect = sub.add_parser(
        "inspect", help="describe a palette TFLite file or an archive",
        description="Print the palette, each tensor's storage (index dtype, elements, unique "
                    "values, bytes), the tensors that are not palette-indexed with the reason, "
                    "and whole-file totals.")
    inspect.add_argument("file", help="a .tflite file or a .wfn archive")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _default_output(model_path: str, fmt: str) -> str:
    stem = os.path.splitext(model_path)[0]
    return stem + (".wfn" if fmt == "archive" else f"_{fmt}.tflite")


def _export(args) -> int:
    if not os.path.isfile(args.model):
        raise SystemExit(f"tfmot-wfn export: no such file: {args.model}")
    output = args.output or _default_output(args.model, args.format)
    say = (lambda *a: None) if args.quiet else print
    from tfmot_wfn import lite

    model = lite.load_keras_model(args.model)
    if args.format == "archive":
        info = lite.save_archive(model, output)
        say(f"wrote {output}: {info['archive_bytes']} bytes; {info['N']} palette-indexed weights "
            f"at {info['H']:.3f} bits each (entropy bound {info['bound_bytes']:.0f} bytes)")
    else:
        result = lite.export_tflite(model, output, mode=args.format)
        say(str(result))
    return 0


def _is_archive(path: str) -> bool:
    from tfmot_wfn.lite import archive

    with open(path, "rb") as f:
        head = f.read(len(archive.MAGIC))
    return head == archive.MAGIC


def _inspect(args) -> int:
    if not os.path.isfile(args.file):
        raise SystemExit(f"tfmot-wfn inspect: no such file: {args.file}")
    if _is_archive(args.file):
        from tfmot_wfn.lite import archive, archive_inspection

        contents = archive.read_archive(args.file)
        summary = archive_inspection.describe(contents, os.path.getsize(args.file))
        print(json.dumps(summary, indent=2) if args.json
              else archive_inspection.format_description(summary))
        return 0
    from tfmot_wfn import lite

    report = lite.inspect(args.file)
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else str(report))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    if args.command == "demo":
        from tfmot_wfn.demo import run_demo

        run_demo(output_dir=args.output, distance=args.distance, float_epochs=args.float_epochs,
                 epochs_per_stage=args.epochs_per_stage, seed=args.seed,
                 verbose=0 if args.quiet else 1)
        return 0
    try:
        if args.command == "export":
            return _export(args)
        if args.command == "inspect":
            return _inspect(args)
    except (ValueError, TypeError, OSError) as error:  # bad input: one clear line, exit 1
        print(f"tfmot-wfn {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
