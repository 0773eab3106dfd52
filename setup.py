"""tfmot_wfn: Weight Fixing Networks for Keras / TensorFlow."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    LONG_DESCRIPTION = f.read()
VERSION = {}  # one source: tfmot_wfn/utils/version.py (read without importing the package)
with open(os.path.join(HERE, "tfmot_wfn", "utils", "version.py"), encoding="utf-8") as f:
    exec(f.read(), VERSION)

setup(
    name="tfmot-wfn",
    version=VERSION["__version__"],
    description=("Weight Fixing Networks for Keras: whole-network weight sharing with few unique "
                 "power-of-two weights, low entropy and no accuracy loss, tfmot-style API."),
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["tfmot_wfn", "tfmot_wfn.*"]),
    python_requires=">=3.9",
    install_requires=[
        "tensorflow>=2.16",  # ships Keras 3
        "keras>=3.3",
        "numpy>=1.23",
        "scikit-learn>=1.2",  # the demo's built-in digits data
        "tqdm>=4.60",
        "constriction>=0.4",  # ANS entropy coding of the archive (tfmot_wfn.archive.wfn_archive)
        "ai-edge-litert>=1.0",  # the mobile interpreter (LiteRT) that runs the palette files
        "flatbuffers>=23",  # TFLite flatbuffer rewriting
        "matplotlib>=3.5",  # tfmot_wfn.apps.plot; `tfmot-wfn fix` and `report` write PNG plots
    ],
    extras_require={
        "data": ["tensorflow-datasets>=4.9"],  # tfmot_wfn.apps.data.from_tfds, `fix --dataset`
        "tests": ["pytest>=7.0", "pytest-xdist>=3.5", "hypothesis>=6.80",
                  "tensorflow-datasets>=4.9",  # tfds mock data (nothing is downloaded)
                  "nbformat>=5.7", "nbclient>=0.7", "ipykernel>=6.0"],  # notebooks in CI
        "legacy": ["tf-keras>=2.16", "tensorflow-model-optimization>=0.8"],
        # benchmarks/run.py: plots, and the tfmot peers (run in a TF_USE_LEGACY_KERAS=1
        # subprocess). tfmot 0.8.x pins absl-py~=1.2, which pip may downgrade to.
        "benchmarks": ["matplotlib>=3.5", "tf-keras>=2.16", "tensorflow-model-optimization>=0.8"],
    },
    entry_points={"console_scripts": ["tfmot-wfn=tfmot_wfn.apps.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
