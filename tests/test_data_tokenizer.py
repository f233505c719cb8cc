"""Tokenizers: byte-level default and GPT-2 BPE from local vocabulary files."""

import gzip
import json
import pickle

import numpy as np
import pytest

from piti_jax.data import tokenizer
from piti_jax.errors import PitiError


def _byte_symbols() -> list[str]:
  """GPT-2's reversible byte -> printable-character table, in byte order."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
      range(ord("®"), ord("ÿ") + 1))
  symbols, extra = {}, 0
  for byte in range(256):
    if byte in printable:
      symbols[byte] = chr(byte)
    else:
      symbols[byte] = chr(256 + extra)
      extra += 1
  return [symbols[b] for b in range(256)]


@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory):
  """A tiny GPT-2-format vocabulary: 256 byte symbols, merges for ' cat' and 'ca', end token last."""
  folder = tmp_path_factory.mktemp("bpe")
  vocab = {symbol: i for i, symbol in enumerate(_byte_symbols())}
  merges = [("Ġ", "c"), ("Ġc", "a"), ("Ġca", "t"), ("c", "a")]
  for left, right in merges:
    vocab[left + right] = len(vocab)
  vocab["<|endoftext|>"] = len(vocab)
  (folder / "encoder.json").write_text(json.dumps(vocab))
  (folder / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
  gz_folder = tmp_path_factory.mktemp("bpe_gz")
  with gzip.open(gz_folder / "encoder.json.gz", "wt") as f:
    f.write(json.dumps(vocab))
  with gzip.open(gz_folder / "vocab.bpe.gz", "wt") as f:
    f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
  return folder, gz_folder, vocab


def test_byte_tokenizer_pads_with_the_end_token_and_masks():
  byte_tokenizer = tokenizer.make_tokenizer("bytes")
  tokens, mask = byte_tokenizer.encode_padded("héllo", 8)
  assert tokens.dtype == np.int32 and mask.dtype == np.bool_
  assert tokens.tolist() == [104, 195, 169, 108, 108, 111, 256, 256]
  assert mask.tolist() == [True] * 6 + [False] * 2
  assert byte_tokenizer.decode(tokens) == "héllo"
  truncated, mask = byte_tokenizer.encode_padded("abcdef", 3)
  assert truncated.tolist() == [97, 98, 99] and mask.all()
  empty, mask = byte_tokenizer.encode_padded("", 4)
  assert empty.tolist() == [256] * 4 and not mask.any()


def test_gpt2_bpe_from_local_files_lowercases_merges_and_pads(bpe_files):
  folder, gz_folder, vocab = bpe_files
  for source in (str(folder), str(gz_folder), str(folder / "encoder.json")):
    bpe = tokenizer.make_tokenizer(source)
    assert bpe.vocab_size == len(vocab) and bpe.end_token == vocab["<|endoftext|>"]
    assert bpe.encode("A Cat") == [vocab["a"], vocab["Ġcat"]]
    assert bpe.encode("cab") == [vocab["ca"], vocab["b"]]
    tokens, mask = bpe.encode_padded("a cat", 5)
    assert tokens.tolist() == [vocab["a"], vocab["Ġcat"]] + [bpe.end_token] * 3
    assert mask.tolist() == [True, True, False, False, False]
    assert bpe.decode(tokens) == "a cat"


def test_gpt2_bpe_from_tokenizer_json_and_pickling(bpe_files, tmp_path):
  folder, _, vocab = bpe_files
  bpe = tokenizer.make_tokenizer(str(folder))
  bpe.save_json(str(tmp_path / "tokenizer.json"))
  from_json = tokenizer.make_tokenizer(str(tmp_path / "tokenizer.json"))
  assert from_json.encode("a cat") == bpe.encode("a cat")
  assert pickle.loads(pickle.dumps(bpe)).encode("a cat") == [vocab["a"], vocab["Ġcat"]]


def test_missing_vocabulary_files_are_reported(tmp_path):
  with pytest.raises(PitiError, match="encoder.json and vocab.bpe"):
    tokenizer.make_tokenizer(str(tmp_path))
  with pytest.raises(PitiError, match="neither 'bytes'"):
    tokenizer.make_tokenizer(str(tmp_path / "nothing"))
