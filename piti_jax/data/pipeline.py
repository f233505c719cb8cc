"""grain input pipelines over tfds ArrayRecord data sources, one shard per process.

Per-process batches are dicts of NumPy arrays (B = global_batch_size / process_count):
  image       float32 (B, image_size, image_size, 3) in [-1, 1]
  condition   float32 (B, condition_size, condition_size, C) in [-1, 1], C = 3 mask, 1 sketch, 6 depth
              (normal RGB then jet depth RGB); image-to-image tasks only
  low_res     float32 (B, low_res_size, low_res_size, 3) in [-1, 1]; only when low_res_size > 0
  tokens      int32 (B, max_text_len), token_mask bool (B, max_text_len); text task only

Transforms follow the reference: squash-resize to load_size (bicubic for images, nearest for
conditions) or, with random_crop, resize the short side and crop a random square; a horizontal
flip shared by image and condition (training); the condition stays at condition_size, the image
is bicubic-resized to image_size; the low-res input is a degraded copy of the load_size image;
with probability uncond_p the condition becomes the null condition (`conditions.null_condition`).
Randomness comes from grain's per-record generator (seeded from the seed and the record's position),
so the batches are a pure function of (seed, process_index, process_count, num_workers): with
worker processes grain groups each batch from one worker's records, so another worker count gives
the same examples in other batches. The iterator state (get_state/set_state) resumes exactly in an
iterator made with the same settings.
"""

import dataclasses
import io

import grain
import ml_collections
from absl import flags
import numpy as np
from PIL import Image

from piti_jax.data import conditions, degradations, tokenizer as tokenizer_lib
from piti_jax.data.config import CONDITION_CHANNELS, check_data_config
from piti_jax.errors import PitiError

TASK_FIELDS = {"mask": ("mask",), "sketch": ("sketch",), "depth": ("normal", "depth"), "text": ("caption",)}


def open_data_source(config: ml_collections.ConfigDict, split: str):
  """The prepared tfds ArrayRecord data source of `split`; image fields come back as encoded bytes."""
  import tensorflow_datasets as tfds

  from piti_jax.data.datasets import prepare_dataset

  builder = prepare_dataset(config)
  if split not in builder.info.splits:
    raise PitiError(f"dataset {config.name!r} has no split {split!r}; its splits are {sorted(builder.info.splits)}.")
  missing = [f for f in ("image",) + TASK_FIELDS[config.task] if f not in builder.info.features]
  if missing:
    raise PitiError(f"dataset {config.name!r} has no field(s) {missing} needed by task {config.task!r}; "
                    f"its fields are {sorted(builder.info.features)}.")
  decoders = {name: tfds.decode.SkipDecoding() for name, feature in builder.info.features.items()
              if isinstance(feature, tfds.features.Image)}
  return builder.as_data_source(split=split, decoders=decoders)


def _decode(data: bytes, mode: str, field: str) -> Image.Image:
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except OSError as error:
    raise PitiError(f"field {field!r} of a prepared example cannot be decoded ({error}); prepare the dataset again "
                    "(delete its folder under data_dir).") from error
  return image.convert(mode) if image.mode != mode else image


def swap_left_right(caption: str) -> str:
  """Keeps a caption true after a horizontal flip."""
  words = caption.split(" ")
  swap = {"left": "right", "right": "left"}
  return " ".join(swap.get(w, w) for w in words)


@dataclasses.dataclass
class ExampleTransform(grain.transforms.RandomMap):
  """Turns one stored example into training arrays (see the module docstring).

  Attributes:
    task: "mask" | "sketch" | "depth" | "text".
    image_size, load_size, condition_size, low_res_size: sides in pixels (low_res_size 0 = none).
    augment: apply flip / random crop / condition dropout (training) or not (evaluation).
    flip, random_crop, uncond_p: augmentation settings.
    degradation: "bsrgan_light" or "bicubic"; l0_smoothing: "fixed" or "reference" (bsrgan_light's op 6).
    tokenizer: a tokenizer_lib tokenizer (text task) or None.
    max_text_len: token sequence length.
  """

  task: str
  image_size: int
  load_size: int
  condition_size: int
  low_res_size: int
  augment: bool
  flip: bool
  random_crop: bool
  uncond_p: float
  degradation: str
  l0_smoothing: str
  tokenizer: object
  max_text_len: int

  def _geometry(self, images: list[tuple[Image.Image, int]], rng: np.random.Generator) -> list[Image.Image]:
    """Resizes (and with random_crop crops) each (image, resample) pair to load_size x load_size."""
    size = self.load_size
    if not (self.augment and self.random_crop):
      return [im if im.size == (size, size) else im.resize((size, size), resample) for im, resample in images]
    width, height = images[0][0].size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = int(rng.integers(0, new_w - size + 1)), int(rng.integers(0, new_h - size + 1))
    box = (left, top, left + size, top + size)
    return [im.resize((new_w, new_h), resample).crop(box) for im, resample in images]

  def _decode_sources(self, element: dict) -> list[tuple[Image.Image, int]]:
    """(image, resample) pairs: the image (bicubic) and the task's condition maps (nearest)."""
    image = _decode(element["image"], "RGB", "image")
    modes = {"mask": (("mask", "RGB"),), "sketch": (("sketch", "L"),), "depth": (("normal", "RGB"), ("depth", "RGB")),
             "text": ()}[self.task]
    sources = [(image, Image.BICUBIC)]
    for field, mode in modes:
      condition = _decode(element[field], mode, field)
      if condition.size != image.size:
        raise PitiError(f"a prepared {field} map is {condition.size[0]}x{condition.size[1]} but its image is "
                        f"{image.size[0]}x{image.size[1]}; prepare the dataset again.")
      sources.append((condition, Image.NEAREST))
    return sources

  def _condition(self, maps: list[Image.Image]) -> np.ndarray:
    """Condition maps at load_size -> float32 (condition_size, condition_size, C) in [-1, 1]."""
    side = (self.condition_size, self.condition_size)
    arrays = [np.asarray(m if m.size == side else m.resize(side, Image.NEAREST)) for m in maps]
    if self.task == "sketch":
      return conditions.sketch_condition(arrays[0])
    return np.concatenate([conditions.to_unit_range(a) for a in arrays], axis=-1)

  def _low_res(self, image: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """The upsampler's input from the load_size image: float32 (low_res_size, low_res_size, 3)."""
    if self.degradation == "bsrgan_light":
      low = degradations.bsrgan_light(np.asarray(image), scale=self.load_size // self.low_res_size, rng=rng,
                                      l0_smoothing=self.l0_smoothing)
    else:
      low = np.asarray(image.resize((self.low_res_size, self.low_res_size), Image.BICUBIC))
    return conditions.to_unit_range(low)

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    """One stored example -> {"image", "condition" | "tokens" + "token_mask", ["low_res"]}."""
    resized = self._geometry(self._decode_sources(element), rng)
    flipped = self.augment and self.flip and rng.random() < 0.5
    if flipped:
      resized = [im.transpose(Image.FLIP_LEFT_RIGHT) for im in resized]
    image_full = resized[0]
    image_out = image_full if self.image_size == self.load_size else image_full.resize(
        (self.image_size, self.image_size), Image.BICUBIC)
    result = {"image": conditions.to_unit_range(np.asarray(image_out))}
    drop = self.augment and rng.random() < self.uncond_p
    if self.task == "text":
      caption = element["caption"]
      caption = caption.decode("utf-8") if isinstance(caption, bytes) else str(caption)
      if flipped:
        caption = swap_left_right(caption)
      tokens, mask = self.tokenizer.encode_padded(caption, self.max_text_len)
      text = {"tokens": tokens, "mask": mask}
      text = conditions.null_condition(text) if drop else text
      result["tokens"], result["token_mask"] = text["tokens"], text["mask"]
    else:
      condition = self._condition(resized[1:])
      result["condition"] = conditions.null_condition(condition) if drop else condition
    if self.low_res_size:
      result["low_res"] = self._low_res(image_full, rng)
    return result


def make_transform(config: ml_collections.ConfigDict, *, augment: bool) -> ExampleTransform:
  """The per-example transform for a data config."""
  check_data_config(config)
  tokenizer = tokenizer_lib.make_tokenizer(config.tokenizer) if config.task == "text" else None
  return ExampleTransform(task=config.task, image_size=config.image_size, load_size=config.load_size,
                          condition_size=config.condition_size, low_res_size=config.low_res_size, augment=augment,
                          flip=config.flip, random_crop=config.random_crop, uncond_p=config.uncond_p,
                          degradation=config.degradation, l0_smoothing=config.l0_smoothing, tokenizer=tokenizer,
                          max_text_len=config.max_text_len)


def make_sampler(num_records: int, *, seed: int, process_index: int, process_count: int, shuffle: bool,
                 num_epochs: int | None) -> grain.samplers.IndexSampler:
  """Index sampler over this process's shard (contiguous, equal-sized shards; the remainder is dropped)."""
  if not 0 <= process_index < process_count:
    raise PitiError(f"process_index={process_index} must be in [0, process_count={process_count}).")
  if num_records < process_count:
    raise PitiError(f"the split has {num_records} records, fewer than the {process_count} processes reading it.")
  shard = grain.sharding.ShardOptions(shard_index=process_index, shard_count=process_count, drop_remainder=True)
  return grain.samplers.IndexSampler(num_records=num_records, shard_options=shard, shuffle=shuffle,
                                     num_epochs=num_epochs, seed=grain_seed(seed))


def grain_seed(seed: int) -> int:
  """Mixes a user seed into grain's 32-bit seed (grain seeds record i with seed + i, so nearby user
  seeds would otherwise share per-record random streams)."""
  return int(np.random.SeedSequence(seed).generate_state(1)[0])


def _per_process_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise PitiError(f"global batch size {global_batch_size} is not divisible by the {process_count} processes.")
  return global_batch_size // process_count


def _make_loader(config, *, split, global_batch_size, seed, process_index, process_count, shuffle, num_epochs,
                 augment) -> grain.DataLoader:
  source = open_data_source(config, split)
  num_records = len(source)
  if split == config.train_split and config.train_subset:
    if config.train_subset > num_records:
      raise PitiError(f"data.train_subset={config.train_subset} exceeds the {num_records} records of split "
                      f"{split!r}; lower it or set 0 for the whole split.")
    num_records = config.train_subset
  batch_size = _per_process_batch(global_batch_size, process_count)
  sampler = make_sampler(num_records, seed=seed, process_index=process_index, process_count=process_count,
                         shuffle=shuffle, num_epochs=num_epochs)
  operations = [make_transform(config, augment=augment), grain.transforms.Batch(batch_size, drop_remainder=True)]
  if config.num_workers and not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags; outside an absl app use defaults
  read_options = grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=config.prefetch_records)
  return grain.DataLoader(data_source=source, sampler=sampler, operations=operations,
                          worker_count=config.num_workers, worker_buffer_size=config.worker_buffer_size,
                          read_options=read_options)


def make_train_iterator(data_config: ml_collections.ConfigDict, *, global_batch_size: int, seed: int,
                        process_index: int, process_count: int):
  """An endless, shuffled, augmented iterator of this process's batches (grain DataLoaderIterator).

  Checkpointable: `it.get_state()` -> bytes, `it.set_state(state)` resumes exactly.
  """
  loader = _make_loader(data_config, split=data_config.train_split, global_batch_size=global_batch_size, seed=seed,
                        process_index=process_index, process_count=process_count, shuffle=True, num_epochs=None,
                        augment=True)
  return iter(loader)


def make_eval_iterator(data_config: ml_collections.ConfigDict, *, global_batch_size: int, process_index: int,
                       process_count: int, seed: int = 0, num_epochs: int | None = 1):
  """One pass (by default) over the eval split in order, without augmentation or condition dropout.

  The low-res input (upsampler) is still degraded, deterministically from `seed`. Incomplete last
  batches are dropped so every batch has the same shape.
  """
  loader = _make_loader(data_config, split=data_config.eval_split, global_batch_size=global_batch_size, seed=seed,
                        process_index=process_index, process_count=process_count, shuffle=False,
                        num_epochs=num_epochs, augment=False)
  return iter(loader)


def batch_shapes(data_config: ml_collections.ConfigDict, batch_size: int) -> dict[str, tuple[tuple[int, ...], type]]:
  """Shapes and dtypes of the batch keys for a data config: {key: (shape, dtype)}."""
  check_data_config(data_config)
  size = data_config.image_size
  shapes = {"image": ((batch_size, size, size, 3), np.float32)}
  if data_config.task == "text":
    shapes["tokens"] = ((batch_size, data_config.max_text_len), np.int32)
    shapes["token_mask"] = ((batch_size, data_config.max_text_len), np.bool_)
  else:
    side = data_config.condition_size
    shapes["condition"] = ((batch_size, side, side, CONDITION_CHANNELS[data_config.task]), np.float32)
  if data_config.low_res_size:
    low = data_config.low_res_size
    shapes["low_res"] = ((batch_size, low, low, 3), np.float32)
  return shapes

