"""Evaluation: FID/KID with the standard Inception network, LPIPS, layout fidelity, colour statistics.

- `inception`: the FID Inception-v3 (2048-d pool features) in JAX, with real weights read once.
- `fid`: feature statistics, Frechet distance, KID; `python -m piti_jax.evaluation.fid A B`.
- `lpips`: LPIPS (VGG) between image pairs.
- `layout`: mIoU of an oracle's labels of the samples against the input masks.
- `colour`: saturation and per-channel statistics (what guidance does to colours).
- `runner`: mode=evaluate over sample folders written by mode=sample.
"""
