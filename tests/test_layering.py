"""The package imports only downward: utils <- core <- keras <- tflite/export/archive <- apps.

Every ``import tfmot_wfn.X`` / ``from tfmot_wfn.X import`` in a module (at any depth,
including imports inside functions) must name a package its own package may use.
"""

import ast
import os
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tfmot_wfn")

# package -> the tfmot_wfn packages it may import (besides itself)
ALLOWED = {
    "utils": set(),
    "core": {"utils"},
    "keras": {"utils", "core"},
    "tflite": {"utils"},
    "export": {"utils", "core", "keras", "tflite"},
    "archive": {"utils", "core", "keras"},
    "lite": {"utils", "core", "keras", "tflite", "export", "archive"},
    "apps": {"utils", "core", "keras", "tflite", "export", "archive", "lite", "<top>"},
    # Test oracles shared by tests/ and benchmarks/: everything below apps.
    "testing": {"utils", "core", "keras", "tflite", "export", "archive", "lite", "<top>"},
}
NO_KERAS = {"utils", "core", "tflite"}


def _modules():
    for dirpath, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py") and "__pycache__" not in dirpath:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, PACKAGE).split(os.sep)
                yield path, (rel[0] if len(rel) > 1 else "<top>")


def _imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tfmot_wfn":
                for alias in node.names:
                    yield node.lineno, f"tfmot_wfn.{alias.name}"
            else:
                yield node.lineno, node.module


def _target(module):
    parts = module.split(".")
    if parts[0] != "tfmot_wfn":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "<top>"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_downward(package):
    bad = []
    for path, owner in _modules():
        if owner != package:
            continue
        for line, module in _imports(path):
            target = _target(module)
            if target is None or target == package:
                continue
            if target not in ALLOWED[package]:
                bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports {module}")
            if package in NO_KERAS and module.split(".")[0] in ("keras", "tf_keras"):
                bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports {module}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_old_module_paths_warn_and_alias_the_new_module():
    import importlib
    import sys

    from tfmot_wfn import _moved_modules

    old, new = "tfmot_wfn.lite.palette_format", _moved_modules.MOVED["tfmot_wfn.lite.palette_format"]
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)


def test_every_moved_path_names_an_existing_module():
    import importlib.util

    from tfmot_wfn import _moved_modules

    for old, new in {**_moved_modules.MOVED, **_moved_modules.ALIASES}.items():
        assert importlib.util.find_spec(new) is not None, f"{old} -> {new}: no such module"
        assert not os.path.exists(os.path.join(ROOT, *old.split(".")) + ".py"), f"{old} still exists"
