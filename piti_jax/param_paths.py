"""Flat dotted paths for nested parameter dicts ("decoder.input_blocks.1.0.in_layers.2.kernel").

A parameter's path is its PyTorch reference key with the NNX leaf name, so flat views, error
messages and trainable-prefix matching all read like the reference's state dict. List indices
appear as decimal strings.
"""

from typing import Any, Iterable, Mapping

SEPARATOR = "."


def join(keys: Iterable[Any]) -> str:
  """("decoder", 0, "kernel") -> "decoder.0.kernel"."""
  return SEPARATOR.join(map(str, keys))


def flatten(tree: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dict (str or int keys) -> {"a.b.0.kernel": leaf}."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{SEPARATOR}{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      flat.update(flatten(value, path))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{"a.b.0.kernel": leaf} -> {"a": {"b": {"0": {"kernel": leaf}}}} (string keys)."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split(SEPARATOR)
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree
