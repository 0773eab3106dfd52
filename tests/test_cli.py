"""The command line and the demo job."""

import json
import os

import numpy as np
import pytest

from tfmot_wfn import cli


def test_demo_arguments_have_documented_defaults():
    args = cli.build_parser().parse_args(["demo"])
    assert args.output == "wfn_demo_output"
    assert args.distance is None and args.epochs_per_stage == 2 and not args.quiet


@pytest.mark.parametrize("bad", [["demo", "--distance", "0"], ["demo", "--distance", "1.5"],
                                 ["demo", "--epochs-per-stage", "0"], ["nonsense"], []])
def test_bad_arguments_exit_with_usage_error(bad, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(bad)
    assert info.value.code == 2
    assert "usage: tfmot-wfn" in capsys.readouterr().err


def test_help_lists_the_demo(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_short_demo_writes_a_fixed_model_and_a_consistent_report(tmp_path, capsys):
    from tfmot_wfn.keras.compat import keras
    import tfmot_wfn

    out = tmp_path / "demo"
    assert cli.main(["demo", "--output", str(out), "--float-epochs", "3",
                     "--epochs-per-stage", "1"]) == 0
    printed = capsys.readouterr().out
    for label in ("float accuracy", "fixed accuracy", "unique values", "entropy", "zeros", "palette"):
        assert label in printed
    report = json.loads((out / "report.json").read_text())
    model = keras.models.load_model(os.fspath(out / "fixed_model.keras"))
    values = np.concatenate([w.numpy().ravel() for layer in model.layers
                             for w in layer.weights if "moving" not in w.path])
    # The saved model is plain Keras, fully fixed, and the report describes it.
    assert not any(isinstance(l, tfmot_wfn.WeightFixingWrapper) for l in model.layers)
    assert report["total_weights"] == values.size
    assert report["unique_values"] == np.unique(values).size
    assert [p["value"] for p in report["palette"]] == sorted(np.unique(values).tolist())
    assert report["stages"][-1]["fixed"] == report["total_weights"]
    assert 0.0 <= report["fixed_accuracy"] <= 1.0
