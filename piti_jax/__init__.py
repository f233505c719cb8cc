"""piti-jax: PITI (Pretraining is All You Need for Image-to-Image Translation) in JAX/Flax NNX."""

__version__ = "0.1.0"
