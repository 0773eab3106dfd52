"""The Bazel BUILD file declares every module and every test file of the repository."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_text():
    with open(os.path.join(ROOT, "BUILD")) as f:
        return f.read()


def _python_files(folder):
    found = set()
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
        if "__pycache__" in dirpath:
            continue
        for name in files:
            if name.endswith(".py"):
                found.add(os.path.relpath(os.path.join(dirpath, name), ROOT))
    return found


def _named_files():
    return set(re.findall(r'"([^"]+\.py)"', _build_text()))


def test_build_names_every_library_module():
    missing = _python_files("tfmot_wfn") - _named_files()
    assert not missing, f"BUILD does not declare these modules: {sorted(missing)}"


def test_build_names_every_test_file():
    missing = _python_files("tests") - _named_files()
    assert not missing, f"BUILD does not declare these test files: {sorted(missing)}"


def test_build_names_no_missing_file():
    stale = {p for p in _named_files() if not os.path.exists(os.path.join(ROOT, p))}
    assert not stale, f"BUILD names files that do not exist: {sorted(stale)}"


def test_every_test_file_has_a_py_test_target():
    text = _build_text()
    for path in _python_files("tests"):
        name = os.path.basename(path)
        if name.startswith("test_"):
            assert re.search(r'py_test\(\s*name = "%s"' % name[:-3], text), f"no py_test for {path}"


def test_build_file_is_valid_starlark_syntax():
    # Starlark is a subset of Python syntax: the BUILD file must at least parse.
    ast.parse(_build_text())
