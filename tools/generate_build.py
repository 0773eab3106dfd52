"""Regenerate the Bazel BUILD file from the source tree.

    python tools/generate_build.py            # every module and test file
    python tools/generate_build.py --exclude export   # leave out paths containing "export"

tests/test_build_file.py checks that BUILD declares every module and test file.
"""

import argparse
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HEADER = '''# Bazel build of tfmot_wfn, in the style of tfmot's BUILD files.
# Regenerate with tools/generate_build.py; tests/test_build_file.py checks that every
# module and test file is declared here.

load("@rules_python//python:defs.bzl", "py_binary", "py_library", "py_test")

package(default_visibility = ["//visibility:public"])

licenses(["notice"])
'''

LIBRARY = '''
py_library(
    name = "{name}",
    {testonly}srcs = [
{srcs}
    ],
    deps = [
{deps}
    ],
)
'''

TEST = '''
py_test(
    name = "{name}",
    size = "{size}",
    srcs = ["{src}"],
    main = "{src}",{data}
    deps = [
{deps}
    ],
)
'''

BINARY = '''
py_binary(
    name = "tfmot-wfn",
    srcs = ["tfmot_wfn/apps/cli.py"],
    main = "tfmot_wfn/apps/cli.py",
    deps = [":apps"],
)
'''


def _files(pattern, exclude):
    found = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    return [f for f in found if not any(x in f for x in exclude)]


def _lines(items, quote=True):
    return "\n".join(f'        "{i}",' if quote else f"        {i}," for i in items)


# Packages in dependency order: each may import only the ones before it that it lists.
PACKAGES = [
    ("utils", [], []),
    ("core", [":utils"], ["# numpy dep"]),
    ("keras", [":core", ":utils"], ["# tensorflow dep", "# keras dep", "# tqdm dep"]),
    ("tflite", [":utils"], ["# flatbuffers dep", "# ai-edge-litert dep"]),
    ("export", [":keras", ":tflite"], []),
    ("archive", [":keras", ":core", ":utils"], ["# constriction dep"]),
    ("lite", [":export", ":tflite", ":archive"], []),
    ("tfmot_wfn", [":keras", ":lite"], []),
    ("apps", [":tfmot_wfn"], ["# matplotlib dep", "# scikit-learn dep"]),
    ("testing", [":tfmot_wfn"], []),  # oracles shared by tests/ and benchmarks/
]
TESTONLY = {"testing"}


def _package_files(name, exclude):
    return _files("tfmot_wfn/*.py" if name == "tfmot_wfn" else f"tfmot_wfn/{name}/*.py", exclude)


def generate(exclude=()):
    tests = _files("tests/*.py", exclude)
    support = [t for t in tests if not os.path.basename(t).startswith("test_")]
    out = [HEADER]
    for name, deps, comments in PACKAGES:
        srcs = _package_files(name, exclude)
        if srcs:
            testonly = "testonly = True,\n    " if name in TESTONLY else ""
            out.append(LIBRARY.format(name=name, testonly=testonly, srcs=_lines(srcs), deps=_lines(
                [f'"{d}"' for d in deps], quote=False) + "".join(f"\n        {c}" for c in comments)))
    out.append(BINARY)
    out.append(LIBRARY.format(name="test_support", testonly="testonly = True,\n    ",
                              srcs=_lines(support), deps=_lines(['":apps"', '":testing"'], quote=False)))
    for t in tests:
        name = os.path.basename(t)[:-3]
        if not name.startswith("test_"):
            continue
        deps = ['":test_support"', '":apps"']
        data = '\n    data = ["tools/check_tflite_runtime.py"],' if name == "test_lite_export" else ""
        size = "large" if "end_to_end" in name or "architectures" in name else "medium"
        out.append(TEST.format(name=name, size=size, src=t, data=data,
                               deps=_lines(deps, quote=False) + "\n        # pytest dep\n        # hypothesis dep"))
    return "".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exclude", action="append", default=[], help="skip paths containing this")
    args = parser.parse_args()
    with open(os.path.join(ROOT, "BUILD"), "w") as f:
        f.write(generate(args.exclude))


if __name__ == "__main__":
    main()
