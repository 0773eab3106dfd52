"""Regenerate the Bazel BUILD file from the source tree.

    python tools/generate_build.py            # every module and test file
    python tools/generate_build.py --exclude lite   # leave out paths containing "lite"

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
    srcs = ["tfmot_wfn/cli.py"],
    main = "tfmot_wfn/cli.py",
    deps = [":tfmot_wfn"],
)
'''


def _files(pattern, exclude):
    found = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    return [f for f in found if not any(x in f for x in exclude)]


def _lines(items, quote=True):
    return "\n".join(f'        "{i}",' if quote else f"        {i}," for i in items)


def generate(exclude=()):
    core = _files("tfmot_wfn/core/*.py", exclude)
    keras = _files("tfmot_wfn/keras/*.py", exclude)
    lite = _files("tfmot_wfn/lite/*.py", exclude)
    top = _files("tfmot_wfn/*.py", exclude)
    tests = _files("tests/*.py", exclude)
    support = [t for t in tests if not os.path.basename(t).startswith("test_")]
    out = [HEADER]
    out.append(LIBRARY.format(name="core", testonly="", srcs=_lines(core), deps="        # numpy dep,"))
    out.append(LIBRARY.format(name="keras", testonly="", srcs=_lines(keras), deps=_lines(
        ['":core"', "# tensorflow dep", "# keras dep", "# tqdm dep"], quote=False).replace(
        '        # tensorflow dep,', '        # tensorflow dep').replace(
        '        # keras dep,', '        # keras dep').replace('        # tqdm dep,', '        # tqdm dep')))
    out.append(LIBRARY.format(name="tfmot_wfn", testonly="", srcs=_lines(top),
                              deps=_lines(['":core"', '":keras"'], quote=False)))
    if lite:
        out.append(LIBRARY.format(name="lite", testonly="", srcs=_lines(lite), deps=_lines(
            ['":tfmot_wfn"'], quote=False) + "\n        # ai-edge-litert dep\n        # constriction dep"))
    out.append(BINARY)
    out.append(LIBRARY.format(name="test_support", testonly="testonly = True,\n    ",
                              srcs=_lines(support), deps=_lines(
                                  ['":tfmot_wfn"'] + (['":lite"'] if lite else []), quote=False)))
    for t in tests:
        name = os.path.basename(t)[:-3]
        if not name.startswith("test_"):
            continue
        uses_lite = "lite" in name or name == "test_architectures"
        deps = ['":test_support"', '":tfmot_wfn"'] + (['":lite"'] if uses_lite and lite else [])
        data = '\n    data = ["tools/check_tflite_runtime.py"],' if name == "test_lite_export" else ""
        out.append(TEST.format(name=name, size="large" if "end_to_end" in name or "architectures" in name else "medium", src=t, data=data,
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
