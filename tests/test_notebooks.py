"""The notebooks in notebooks/ run top to bottom (nbclient) in smoke mode, offline.

Smoke mode (``WFN_NOTEBOOK_SMOKE=1``) uses tiny sizes and, for the tfds notebook,
``tensorflow_datasets.testing.mock_data``: nothing is downloaded. Each notebook
runs in a fresh kernel in a temporary folder with this checkout on PYTHONPATH,
so its install cell is skipped. Also checked: the committed notebooks carry the
outputs of a full run, a Colab badge, and the guarded install cell first.
"""

from __future__ import annotations

import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
NAMES = ("quickstart.ipynb", "cifar10_resnet.ipynb", "tflite_deployment.ipynb")
NEEDS = {"cifar10_resnet.ipynb": ("tensorflow_datasets",)}


def _read(name):
    return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_has_badge_install_cell_and_saved_outputs(name):
    nb = _read(name)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "colab-badge.svg" in first.source
    assert f"notebooks/{name}" in first.source
    code = [c for c in nb.cells if c.cell_type == "code"]
    install = code[0].source
    assert 'find_spec("tfmot_wfn") is None' in install and "pip" in install
    assert "WFN_NOTEBOOK_SMOKE" in code[1].source
    # Committed with the outputs of a run: every code cell ran, in order, without errors.
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), counts
    for cell in code:
        assert not [o for o in cell.outputs if o.output_type == "error"]
    assert any(o.get("data", {}).get("image/png") for c in code for o in c.outputs), \
        "no plot was saved"


# Measured on 2 cores (kernel start and TensorFlow import included): quickstart 16-27 s,
# tflite_deployment 13-20 s, cifar10_resnet 45-72 s (two ResNet traces). Over 20 s: slow.
SLOW = ("quickstart.ipynb", "cifar10_resnet.ipynb")
SMOKE_RUNS = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
              for name in NAMES]


@pytest.mark.parametrize("name", SMOKE_RUNS)
def test_notebook_runs_in_smoke_mode(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    for module in NEEDS.get(name, ()):
        pytest.importorskip(module)
    monkeypatch.setenv("WFN_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    # The kernel spec runs "python": make it this interpreter (a venv, pyenv...).
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    nb = _read(name)
    for cell in nb.cells:  # run from a clean state
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError with the failing cell and traceback
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    if name == "quickstart.ipynb":
        assert "smoke mode" in "".join(o.get("text", "") for o in code[1].outputs)
    pngs = [o for c in code for o in c.outputs if o.get("data", {}).get("image/png")]
    assert pngs, "the plots did not display"


def _make_notebooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_notebooks", os.path.join(NOTEBOOKS, "make_notebooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_badge_and_install_cell_come_from_the_one_repository_constant(name, monkeypatch):
    """The committed notebooks' cells are the script's; --relink swaps only the GitHub
    owner/name (make_notebooks.GITHUB_REPO) in the badge and install cells, keeping outputs."""
    make = _make_notebooks()
    committed = _read(name)
    built = make.build(name)
    assert [c.source for c in committed.cells] == [c.source for c in built.cells], \
        "notebooks/make_notebooks.py and the committed notebook differ: regenerate it"
    repo = make.GITHUB_REPO
    install = [c for c in committed.cells if c.cell_type == "code"][0]
    assert f"colab.research.google.com/github/{repo}/blob/" in committed.cells[0].source
    assert f"git+https://github.com/{repo}.git" in install.source
    monkeypatch.setattr(make, "GITHUB_REPO", "someone/fork")
    relinked = make.relink(_read(name), make.build(name))
    changed = [i for i, (a, b) in enumerate(zip(committed.cells, relinked.cells))
               if a.source != b.source]
    assert changed == [0, committed.cells.index(install)]
    assert "github/someone/fork/blob/" in relinked.cells[0].source
    assert repo not in relinked.cells[0].source
    assert "git+https://github.com/someone/fork.git" in relinked.cells[changed[1]].source
    assert [c.get("outputs") for c in relinked.cells] == [c.get("outputs") for c in committed.cells]
