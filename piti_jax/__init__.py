"""piti-jax: PITI (Pretraining is All You Need for Image-to-Image Translation) in JAX/Flax NNX."""

import os

from piti_jax import cpu_flags

# etils.epath sends gs:// through fsspec (gcsfs) instead of TensorFlow's GCS client; see piti_jax/storage.py.
os.environ.setdefault("EPATH_USE_TF", "false")

# XLA:CPU flags (faster convolutions on CPU), before JAX starts a backend; see piti_jax/cpu_flags.py.
cpu_flags.add_to(os.environ)

__version__ = "0.1.0"
