"""The command line and the demo job."""

import json
import os

import numpy as np
import pytest

from tfmot_wfn.apps import cli


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


def _subcommands():
    import argparse

    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_subcommand_has_help(capsys):
    """`tfmot-wfn COMMAND --help` prints a usage, a description and every option's help."""
    commands = _subcommands()
    assert set(commands) == {"demo", "fix", "report", "export", "inspect"}
    for name, sub in commands.items():
        with pytest.raises(SystemExit) as info:
            cli.main([name, "--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: tfmot-wfn {name}") and sub.description.split()[0] in text
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in text, (name, flag)
            assert action.help, (name, action.dest)  # every argument is explained
        if name != "inspect":  # every long-running command can be silenced
            assert "--quiet" in text, name


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
    # The mobile files exist, their sizes are the ones reported, and they agree with Keras.
    mobile = report["mobile"]
    for name, key in (("model_palette.tflite", "palette_bytes"), ("model_dense.tflite", "dense_bytes"),
                      ("model_int8_weight_only.tflite", "weight_only_bytes"),
                      ("model.wfn", "archive_bytes")):
        assert (out / name).stat().st_size == mobile[key]
    assert mobile["palette_bytes"] < mobile["dense_bytes"]
    assert mobile["archive_bytes"] <= mobile["archive_bound_bytes"]
    assert mobile["weight_only_bytes"] < 0.5 * mobile["dense_bytes"]
    assert mobile["top1_equal_decoded"] and mobile["top1_equal_as_stored"]
    assert mobile["top1_equal_weight_only"] and mobile["weight_only_equal_float_file"]
    assert "palette TFLite" in printed and "int8 weight-only" in printed
    assert "archive (.wfn)" in printed


@pytest.fixture(scope="module")
def saved_fixed_model(tmp_path_factory):
    """A small CNN, fully fixed in one stage, saved as .keras (wrapped, mid-training form)."""
    from tfmot_wfn.keras.compat import keras
    import tfmot_wfn
    from tfmot_wfn.apps.demo import build_cnn

    keras.utils.set_random_seed(1)
    fixed = tfmot_wfn.fix_weights(build_cnn(keras))
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.05)
    path = tmp_path_factory.mktemp("cli") / "fixed.keras"
    fixed.save(path)
    return path, fixed


@pytest.mark.parametrize("fmt, suffix", [("palette", "_palette.tflite"), ("dense", "_dense.tflite"),
                                         ("float16", "_float16.tflite"),
                                         ("int8_weight_only", "_int8_weight_only.tflite"),
                                         ("archive", ".wfn")])
def test_export_writes_each_format_and_inspect_describes_it(saved_fixed_model, fmt, suffix, capsys):
    import tfmot_wfn
    from tfmot_wfn import lite

    path, fixed = saved_fixed_model
    assert cli.main(["export", str(path), "--format", fmt]) == 0
    written = str(path)[: -len(".keras")] + suffix
    assert os.path.getsize(written) > 0
    capsys.readouterr()
    assert cli.main(["inspect", written, "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    palette = tfmot_wfn.palette(fixed)
    if fmt == "archive":
        assert described["palette"] == palette.tolist()
        restored = lite.load_archive(written)
        stripped = tfmot_wfn.strip_fixing(fixed)
        for a, b in zip(restored.weights, stripped.weights):
            assert np.array_equal(a.numpy(), b.numpy())
    elif fmt == "palette":
        assert cli.main(["inspect", written]) == 0
        assert "palette" in capsys.readouterr().out
        np.testing.assert_array_equal(lite.inspect(written).palette, palette)
    elif fmt in ("float16", "int8_weight_only"):
        from tfmot_wfn.keras.compat import short_name

        assert described["format"] == fmt
        half = [t for t in described["tensors"] if t["stored_as"] in ("float16", "int8")]
        assert sum(t["elements"] for t in half) >= sum(  # every kernel at least
            int(np.prod(v.shape)) for v in tfmot_wfn.strip_fixing(fixed).weights
            if short_name(v) == "kernel")


def test_export_shows_progress_and_quiet_silences_it(saved_fixed_model, tmp_path, capsys):
    path, _ = saved_fixed_model
    target = tmp_path / "loud.tflite"
    assert cli.main(["export", str(path), "--output", str(target)]) == 0
    captured = capsys.readouterr()
    assert "loading fixed.keras" in captured.err  # the progress bar (tqdm, on stderr)
    assert "palette" in captured.out  # the result
    target = tmp_path / "quiet.tflite"
    assert cli.main(["export", str(path), "--output", str(target), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "" and target.stat().st_size > 0


def test_export_refuses_to_write_over_its_own_model(saved_fixed_model, tmp_path):
    path, _ = saved_fixed_model
    copy = tmp_path / "model.keras"
    copy.write_bytes(path.read_bytes())
    with pytest.raises(SystemExit, match="is the model itself"):
        cli.main(["export", str(copy), "--output", str(copy), "--quiet"])
    assert copy.read_bytes() == path.read_bytes()


def test_export_refuses_inference_type_without_int8_and_a_file_that_is_not_keras(saved_fixed_model, tmp_path, capsys):
    path, _ = saved_fixed_model
    with pytest.raises(SystemExit) as info:
        cli.main(["export", str(path), "--format", "palette", "--inference-type", "int8"])
    assert info.value.code == 2 and "--format int8 only" in capsys.readouterr().err
    fake = tmp_path / "notes.keras"
    fake.write_text("not a model")
    for command in (["export", str(fake)], ["report", str(fake)]):
        assert cli.main(command + ["--quiet"]) == 1
        assert "is not a .keras file" in capsys.readouterr().err


def test_export_and_inspect_refuse_missing_files(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        cli.main(["export", str(tmp_path / "missing.keras")])
    with pytest.raises(SystemExit, match="no such file"):
        cli.main(["inspect", str(tmp_path / "missing.tflite")])


def test_inspect_refuses_a_damaged_archive_clearly(saved_fixed_model, tmp_path, capsys):
    path, _ = saved_fixed_model
    target = tmp_path / "m.wfn"
    assert cli.main(["export", str(path), "--format", "archive", "--output", str(target), "--quiet"]) == 0
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    assert cli.main(["inspect", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tfmot-wfn inspect: error: ") and "checksum" in err.lower()


def test_ctrl_c_during_fix_exits_130_with_the_resume_hint(monkeypatch, tmp_path, capsys):
    from tfmot_wfn.apps import fix_job

    def interrupted(config, overwrite=False, callbacks=()):
        raise KeyboardInterrupt

    monkeypatch.setattr(fix_job, "run_fix_job", interrupted)
    code = cli.main(["fix", str(tmp_path / "m.keras"), "--data-dir", str(tmp_path),
                     "--output", str(tmp_path / "run"), "--quiet"])
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "the same command and --resume" in err


@pytest.mark.parametrize("flag, value, message", [
    ("--distance", "1", "must be in (0, 1), got 1"),
    ("--validation-split", "1", "must be in [0, 1), got 1"),
    ("--batch-size", "2.5", "expected an integer, got '2.5'"),
    ("--learning-rate", "inf", "must be > 0 and finite, got inf"),
    ("--learning-rate", "x", "expected a number, got 'x'"),
])
def test_fix_arguments_say_what_they_expect(flag, value, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["fix", "m.keras", "--data-dir", ".", flag, value])
    assert info.value.code == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err


def test_export_formats_are_export_tflites_modes_and_the_archive():
    """The CLI lists the modes itself (importing export_tflite would import Keras at startup)."""
    from tfmot_wfn.export.palette_export import MODES

    parser = cli.build_parser()
    export = parser._subparsers._group_actions[0].choices["export"]
    formats = next(a for a in export._actions if a.dest == "format").choices
    assert set(formats) == set(MODES) | {"archive"}
