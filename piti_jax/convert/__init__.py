"""Import of the public PyTorch GLIDE/PITI checkpoints into piti_jax model checkpoints.

- `mapping`: PyTorch key/layout -> parameter path/layout (`plan_conversion` checks names and
  shapes only; `convert_state_dict` moves the arrays); pure NumPy, no torch.
- `pipeline`: fills freshly initialised parts (GLIDE -> PITI) and writes the checkpoint.
- `__main__`: `python -m piti_jax.convert --src FILE.pt --model PRESET [--task ...] --out DIR`.
"""
