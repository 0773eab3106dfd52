"""tfmot_wfn.apps.plot: PNG figures of the palette, the stages and the layers."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import tfmot_wfn  # noqa: E402
from tfmot_wfn.apps import plot  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fixed_model():
    """A small MLP, fully fixed in one stage (no training needed for plots)."""
    import keras_helpers as kh

    fixed = tfmot_wfn.fix_weights(kh.dense_model(batchnorm=True))
    tfmot_wfn.run_fixing_stage(fixed, 1.0, 0.05)
    return fixed


@pytest.fixture(scope="module")
def history():
    from tfmot_wfn.keras.network import StageSummary

    return [StageSummary(fraction=f, distance=0.015 * (4 - i), total=1000, fixed=int(1000 * f),
                         newly_fixed=100, palette_size=5 + 3 * i, steps=10, max_order=3)
            for i, f in enumerate((0.5, 0.8, 0.95, 1.0))]


def _png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000
    return data


def test_palette_histogram_has_one_bar_per_value_on_a_log_scale(fixed_model, tmp_path):
    rep = tfmot_wfn.report(fixed_model)
    fig = plot.palette_histogram(fixed_model, tmp_path / "palette.png")
    _png(tmp_path / "palette.png")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == sorted(p["count"] for p in rep.palette)
    assert f"{len(rep.palette)} values" in ax.get_title()
    # A report, its dict (report.json) and (values, counts) give the same bars.
    for source in (rep, json.loads(json.dumps(rep.to_dict())),
                   (np.array([p["value"] for p in rep.palette]),
                    np.array([p["count"] for p in rep.palette]))):
        other = plot.palette_histogram(source)
        assert sorted(p.get_height() for p in other.axes[0].patches) == heights


def test_palette_histogram_colours_and_labels_many_values():
    values = np.linspace(-1, 1, 201)
    counts = np.arange(1, 202)
    fig = plot.palette_histogram((values, counts), max_labels=20)
    ax = fig.axes[0]
    assert len(ax.patches) == 201 and 15 <= len(ax.get_xticks()) <= 22
    assert "0" in [t.get_text() for t in ax.get_xticklabels()]  # zero is always labelled
    colours = {tuple(np.round(p.get_facecolor(), 3)) for p in ax.patches}
    assert len(colours) == 3  # negative, zero, positive


def test_palette_histogram_of_an_unfixed_model_is_binned():
    values = np.linspace(-1, 1, plot.MAX_BARS + 1)
    fig = plot.palette_histogram((values, np.ones_like(values)))
    ax = fig.axes[0]
    assert len(ax.patches) == plot.BINS and "distinct" in ax.get_title()


def test_stage_progress_from_stage_summaries_and_dicts(history, tmp_path):
    fig = plot.stage_progress(history, tmp_path / "stages.png")
    _png(tmp_path / "stages.png")
    fixed_ax, unique_ax = fig.axes
    assert [round(p.get_height(), 6) for p in fixed_ax.patches] == [50.0, 80.0, 95.0, 100.0]
    assert unique_ax.get_yscale() == "log"
    rows = [dict(s.__dict__, unique_values=900 - 200 * i, eval_accuracy=0.9 + 0.01 * i)
            for i, s in enumerate(history)]
    fig = plot.stage_progress(rows, baseline_accuracy=0.93)
    assert len(fig.axes) == 3  # accuracy panel when recorded
    assert len(fig.axes[1].get_lines()) == 2  # palette and unique values
    assert len(plot.stage_progress([]).axes) == 2
    with pytest.raises(ValueError, match="fixed"):
        plot.stage_progress([{"fraction": 0.5}])


def test_layer_unique_values_lists_every_layer(fixed_model, tmp_path):
    rep = tfmot_wfn.report(fixed_model)
    fig = plot.layer_unique_values(rep.to_dict(), tmp_path / "layers.png")
    _png(tmp_path / "layers.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [layer["layer"] for layer in rep.layers]
    assert sorted(p.get_width() for p in ax.patches) == sorted(
        layer["unique_values"] for layer in rep.layers)


def test_save_all_writes_the_pngs(fixed_model, history, tmp_path):
    paths = plot.save_all(str(tmp_path / "plots"), fixed_model, history=history)
    assert set(paths) == {"palette", "stages", "layers"}
    for path in paths.values():
        assert open(path, "rb").read(8) == PNG_MAGIC
    assert set(plot.save_all(str(tmp_path / "p2"), tfmot_wfn.report(fixed_model))) == {
        "palette", "layers"}


def test_plots_leave_the_matplotlib_backend_alone(fixed_model):
    import matplotlib

    before = matplotlib.get_backend()
    plot.palette_histogram(fixed_model)
    assert matplotlib.get_backend() == before


def test_bad_sources_are_refused():
    with pytest.raises(TypeError, match="Keras model"):
        plot.palette_histogram(42)
    with pytest.raises(ValueError, match="palette"):
        plot.layer_unique_values({"layers": []})
    with pytest.raises(ValueError, match="length"):
        plot.palette_histogram((np.zeros(3), np.zeros(2)))
