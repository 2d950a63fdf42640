"""vcoach_jax: VisionCoach (grounded video reasoning RL) in JAX / Flax NNX."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent

# Pins that install together on Python 3.11 (DESIGN.md §5). transformers is pinned to the
# release the Qwen2.5-VL parity tests are written against.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "numpy==2.4.6",
    "transformers==4.51.3",
    "tokenizers==0.21.4",
    "huggingface-hub==0.36.2",
    "safetensors==0.8.0",
    "decord==0.6.0",
    "rouge-score==0.1.2",
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    "pillow==13.0.0",
    "matplotlib>=3.7",
    "tqdm==4.70.1",
]

# torch is only used to check parity against transformers. It must be the local CPU
# build: an unpinned torch pulls several GB of CUDA wheels. Never torchvision.
TEST_REQUIRES = [
    "pytest==9.2.0",
    # The suite runs its files on 2 workers (pytest.ini): most of its time is single-threaded
    # XLA compilation, which a second process overlaps.
    "pytest-xdist==3.8.0",
    "hypothesis==6.170.17",
    "torch==2.13.0",
    "transformers==4.51.3",
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
