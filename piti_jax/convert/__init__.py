"""Import of PyTorch GLIDE/PITI checkpoints and pretrained weights (see `__main__` for the CLI)."""
