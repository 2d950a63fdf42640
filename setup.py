"""vcoach_jax: VisionCoach (grounded video reasoning RL) in JAX / Flax NNX."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent

# Ranges, not pins: installing vcoach_jax must not move a user's environment. Each lower bound is
# the oldest release the fast tests were run with; each upper bound excludes the next major
# release (<1 for a 0.x package), which may break the API. docs/dependencies.md gives the rule
# and the versions tested at both ends.
INSTALL_REQUIRES = [
    "jax>=0.8.1,<1",  # jax.enable_x64 as a context manager (0.8.0); flax 0.12.1 needs 0.8.1
    "jaxlib>=0.8.1,<1",
    "flax>=0.12.1,<1",  # Variable.get_value
    "optax>=0.2.5,<1",  # optax.tree.norm
    "orbax-checkpoint>=0.11.20,<1",
    "ml-collections>=1.0.0,<2",
    "ml-dtypes>=0.5.1,<1",  # bfloat16 in HF checkpoints (imported directly)
    "numpy>=2.0,<3",
    # Only tokenizers (AutoTokenizer, Qwen2TokenizerFast): checkpoints are read and written by
    # vcoach_jax itself. 4.49 is the first release that knows Qwen2.5-VL.
    "transformers>=4.49.0,<6",
    "tokenizers>=0.21,<1",  # trains the tiny BPE tokenizer directly
    "decord>=0.6.0,<1",
    "rouge-score>=0.1.2,<1",
    # tf.data, tfds builders and TensorBoard summaries. tensorflow 2.19 caps protobuf below 6,
    # which the current tensorflow-metadata (a tensorflow-datasets dependency) does not load with.
    "tensorflow-cpu>=2.20,<3",
    # tensorflow-metadata (under tensorflow-datasets) is generated with protobuf 6.31 but declares
    # protobuf>=4.25: with an older protobuf `import tensorflow_datasets` half-fails.
    "protobuf>=6.31.1,<8",
    "tensorflow-datasets>=4.9.7,<5",
    "pillow>=10.0,<14",
    "tqdm>=4.64,<5",
    "etils[epath]>=1.9.1,<2",  # vcoach_jax/storage.py
    # orbax lists checkpoint steps in a gs:// bucket through the GCS client (its hierarchical-
    # namespace check); without it a run on a bucket fails at its first checkpoint listing.
    "google-cloud-storage>=3.17,<4",
    "matplotlib>=3.8.4,<4",  # 3.7 does not import with numpy 2
]

# The test environment is pinned exactly: the parity tests compare against transformers 4.51.3
# (with the tokenizers and huggingface-hub it was released with) run on torch. torch is only
# used for that parity; it must be the local CPU build: an unpinned torch pulls several GB of
# CUDA wheels. Never torchvision.
TEST_REQUIRES = [
    "pytest==9.2.0",
    # The suite runs its files on 2 workers (pytest.ini): most of its time is single-threaded
    # XLA compilation, which a second process overlaps.
    "pytest-xdist==3.8.0",
    "hypothesis==6.170.17",
    "torch==2.13.0",
    "transformers==4.51.3",
    "tokenizers==0.21.4",
    "huggingface-hub==0.36.2",
    "safetensors==0.8.0",  # the checkpoint tests read and edit shards with it
    # Executing the colabs/ notebooks (tests/test_colabs.py).
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
]

setuptools.setup(
    name="vcoach_jax",
    version="0.1.0",
    description="VisionCoach grounded video reasoning RL in JAX / Flax NNX",
    long_description=(_HERE / "README.md").read_text(encoding="utf-8")
    if (_HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # configs/ (experiment configs at the top of the repo) installs as vcoach_jax.configs, so the
    # embedded default is importable from any install.
    packages=setuptools.find_packages(include=["vcoach_jax", "vcoach_jax.*"])
    + ["vcoach_jax.configs"],
    package_dir={"vcoach_jax.configs": "configs"},
    package_data={"vcoach_jax": ["assets/*.json", "assets/*.jsonl"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={"console_scripts": ["vcoach = vcoach_jax.cli:main"]},
    license="Apache-2.0",
)
