"""piti-jax: PITI (Pretraining is All You Need for Image-to-Image Translation) in JAX/Flax NNX."""

import os

# etils.epath sends gs:// through fsspec (gcsfs) instead of TensorFlow's GCS client; see piti_jax/storage.py.
os.environ.setdefault("EPATH_USE_TF", "false")

__version__ = "0.1.0"
