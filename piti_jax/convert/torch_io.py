"""Reading PyTorch weight files into NumPy (needs the `convert` extra, CPU only)."""

import os

import numpy as np

from piti_jax.errors import PitiError

INSTALL_HINT = "install PyTorch with `pip install 'piti-jax[convert]'`"


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Loads a PyTorch state dict (a flat {name: tensor} mapping) as float32 NumPy arrays.

  The file is read on the CPU with `weights_only=True`, so no code in it runs. A
  checkpoint that wraps its tensors in {"state_dict": ...} or {"model": ...} is unwrapped.

  Args:
    path: a `.pt`/`.pth` file written by `torch.save(model.state_dict(), path)`.
  Returns:
    {key: float32 array in PyTorch's layout} (e.g. conv kernels OIHW).
  """
  if not os.path.isfile(path):
    raise PitiError(f"PyTorch weight file {path!r} does not exist; pass the path of a downloaded .pt file.")
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise PitiError(f"Reading {path!r} needs PyTorch, which is not installed; {INSTALL_HINT}.") from error
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # torch raises many types for corrupt or non-checkpoint files
    raise PitiError(f"Could not read {path!r} as a PyTorch checkpoint ({error}); is it a complete .pt file?") from error
  for wrapper in ("state_dict", "model"):
    if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
      loaded = loaded[wrapper]
  if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
    raise PitiError(f"{path!r} does not hold a state dict of tensors; save it with torch.save(model.state_dict()).")
  return {key: tensor.detach().to(torch.float32).numpy() for key, tensor in loaded.items()}
