"""Text tokenizers for text-to-image pretraining.

- `ByteTokenizer`: UTF-8 bytes (ids 0..255) plus an end/padding token 256; needs no files.
- `Gpt2BpeTokenizer`: GLIDE's GPT-2 BPE (50257 ids, end token 50256) read from local vocabulary
  files through the `tokenizers` library: a folder or pair of files `encoder.json` + `vocab.bpe`
  (optionally gzipped, as shipped with GLIDE), or a `tokenizer.json`. Like GLIDE, the text is
  lower-cased before encoding.

Padding follows GLIDE's `padded_tokens_and_mask`: truncate to L tokens, pad with the end token,
mask True on real tokens and False on padding.
"""

import abc
import gzip
import json
import os

import numpy as np

from piti_jax.errors import PitiError


class _Tokenizer(abc.ABC):
  """Shared padding logic; subclasses define `encode`, `vocab_size` and `end_token`."""

  vocab_size: int
  end_token: int

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Text -> token ids (no padding)."""

  def encode_padded(self, text: str, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens truncated/padded to `length`: (int32 (length,), bool (length,) mask of real tokens)."""
    tokens = self.encode(text)[:length]
    padded = np.full((length,), self.end_token, np.int32)
    padded[:len(tokens)] = tokens
    mask = np.zeros((length,), bool)
    mask[:len(tokens)] = True
    return padded, mask


class ByteTokenizer(_Tokenizer):
  """UTF-8 bytes as tokens; vocabulary 257 with the end/padding token 256."""

  vocab_size = 257
  end_token = 256

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def decode(self, tokens) -> str:
    return bytes(int(t) for t in tokens if int(t) < 256).decode("utf-8", errors="replace")


def _read_text(path: str) -> str:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    return f.read()


def _find(folder: str, name: str) -> str | None:
  for candidate in (name, name + ".gz"):
    if os.path.exists(os.path.join(folder, candidate)):
      return os.path.join(folder, candidate)
  return None


class Gpt2BpeTokenizer(_Tokenizer):
  """GPT-2 byte-level BPE from local files (GLIDE's text tokenizer)."""

  def __init__(self, path: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    path = os.path.expanduser(path)
    self.path = path
    if os.path.isfile(path) and path.endswith(".json") and os.path.basename(path) != "encoder.json":
      self._tokenizer = Tokenizer.from_file(path)
    else:
      folder = path if os.path.isdir(path) else os.path.dirname(path)
      encoder_path, merges_path = _find(folder, "encoder.json"), _find(folder, "vocab.bpe")
      if encoder_path is None or merges_path is None:
        raise PitiError(f"tokenizer {path!r}: expected encoder.json and vocab.bpe (or .gz) in {folder}, or a "
                        "tokenizer.json file; copy GLIDE's GPT-2 BPE files there or use tokenizer='bytes'.")
      vocab = json.loads(_read_text(encoder_path))
      merge_lines = _read_text(merges_path).split("\n")[1:]  # first line is a version header
      merges = [tuple(line.split()) for line in merge_lines if line.strip()]
      self._tokenizer = Tokenizer(models.BPE(vocab, merges))
      self._tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
      self._tokenizer.decoder = decoders.ByteLevel()
    self.vocab_size = self._tokenizer.get_vocab_size()
    self.end_token = self.vocab_size - 1

  def encode(self, text: str) -> list[int]:
    return self._tokenizer.encode(text.lower(), add_special_tokens=False).ids

  def decode(self, tokens) -> str:
    return self._tokenizer.decode([int(t) for t in tokens if int(t) != self.end_token])

  def save_json(self, path: str) -> None:
    """Writes the vocabulary as one `tokenizer.json` (loadable by `make_tokenizer(path)`)."""
    self._tokenizer.save(path)


def make_tokenizer(spec: str) -> _Tokenizer:
  """"bytes" -> ByteTokenizer; a path -> Gpt2BpeTokenizer (see the module docstring)."""
  if spec == "bytes":
    return ByteTokenizer()
  if not os.path.exists(os.path.expanduser(spec)):
    raise PitiError(f"tokenizer {spec!r} is neither 'bytes' nor an existing file or folder of GPT-2 BPE "
                    "vocabulary (encoder.json + vocab.bpe, or tokenizer.json).")
  return Gpt2BpeTokenizer(spec)
