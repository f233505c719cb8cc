"""Pretrained weight files: reading them once and caching the converted NumPy arrays.

Used by every module that takes real pretrained weights (the converter, the VGG perceptual
network, HED edges, the FID Inception network), so none of them imports another's package.

- `load_torch_state_dict(path)`: a PyTorch state dict (or TorchScript archive) as float32
  NumPy arrays; needs PyTorch (the `convert` extra), imported only here.
- `cache_dir()`, `cache_path(kind, source)`, `read_cached(path)`, `write_cached(path, arrays)`:
  converted arrays are stored as .npz under $PITI_JAX_CACHE (default ~/.cache/piti_jax; any
  epath location, e.g. gs://), keyed by the source file's path, size and modification time,
  written atomically.
"""

import hashlib
import io
import os

import numpy as np
from absl import logging

from piti_jax import storage
from piti_jax.errors import PitiError

CACHE_ENV = "PITI_JAX_CACHE"
CACHE_VERSION = 1
TORCH_HINT = "install PyTorch with `pip install 'piti-jax[convert]'`"

Arrays = dict[str, np.ndarray]


def cache_dir() -> str:
  """Directory of converted pretrained weights: $PITI_JAX_CACHE or ~/.cache/piti_jax."""
  return str(storage.path(os.environ.get(CACHE_ENV) or "~/.cache/piti_jax"))


def source_digest(path: str) -> str:
  """16 hex digits identifying a source file by absolute path, size and mtime (not content)."""
  source = storage.path(path)
  stat = source.stat()
  identity = f"{source}|{stat.length}|{stat.mtime}|{CACHE_VERSION}"
  return hashlib.sha256(identity.encode()).hexdigest()[:16]


def cache_path(kind: str, source: str) -> str:
  """Cache file of the arrays converted from `source`: <cache_dir>/<kind>_<digest>.npz."""
  return str(storage.path(cache_dir()) / f"{kind}_{source_digest(source)}.npz")


def read_cached(path: str) -> Arrays | None:
  """The arrays of a cache file, or None when it is missing or unreadable (then convert again)."""
  if not storage.path(path).is_file():
    return None
  try:
    with np.load(io.BytesIO(storage.path(path).read_bytes())) as cached:
      return {key: cached[key] for key in cached.files}
  except (OSError, ValueError, KeyError) as error:
    logging.warning("ignoring unreadable weight cache %s (%s)", path, error)
    return None


def write_cached(path: str, arrays: Arrays) -> None:
  """Writes the .npz atomically (temp file + rename); a failure to write only logs a warning."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  try:
    storage.write_bytes(path, buffer.getvalue())
  except OSError as error:  # e.g. a read-only home directory: work on, uncached
    logging.warning("could not cache converted weights at %s (%s); set $%s to a writable directory", path, error,
                    CACHE_ENV)


def import_torch(path: str):
  """The torch module, or a PitiError saying that reading `path` needs it."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise PitiError(f"Reading {path!r} needs PyTorch, which is not installed; {TORCH_HINT}.") from error
  return torch


def load_torch_state_dict(path: str) -> Arrays:
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
  if os.path.getsize(path) == 0:
    raise PitiError(f"PyTorch weight file {path!r} is empty (0 bytes); download it again.")
  torch = import_torch(path)
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # torch raises many types for corrupt or non-checkpoint files
    raise PitiError(f"Could not read {path!r} as a PyTorch checkpoint ({type(error).__name__}: {error}); "
                    "is it a complete .pt file?") from error
  for wrapper in ("state_dict", "model"):
    if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
      loaded = loaded[wrapper]
  if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
    raise PitiError(f"{path!r} does not hold a state dict of tensors; save it with torch.save(model.state_dict()).")
  return {key: tensor.detach().to(torch.float32).numpy() for key, tensor in loaded.items()}
