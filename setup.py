"""anatomy_jax: how deep networks acquire visual patterns and what they represent (JAX/Flax)."""
from setuptools import find_packages, setup

setup(
    name="anatomy_jax",
    version="0.1.0",
    description="JAX/Flax research library: pattern acquisition (backdoor toolkit), representation "
    "comparison, class-wise patterns, training dynamics and attribution.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["anatomy_jax", "anatomy_jax.*"]),
    install_requires=[
        "jax>=0.7,<0.11",
        "flax>=0.11,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "tensorflow-datasets>=4.9.7,<4.10",
        "array_record>=0.6",
        "importlib_resources",  # some tfds 4.9.x code paths import it without declaring it
        "chex>=0.1.88",
        "numpy>=1.26",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "pillow>=10",
        "opencv-python-headless>=4.8",  # tfds decodes PNGs 2.5x faster with it
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "saliency>=0.2", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
        # Preparing a tfds catalog dataset the first time (download + encode) needs TensorFlow.
        "prepare": ["tensorflow-cpu>=2.16"],
        # Benchmarks against the PyTorch peer (on CPU-only machines install the CPU build of torch).
        "bench": ["torch>=2.4"],
    },
)
