"""The data config schema (an ml_collections ConfigDict) shared by every job config."""

import ml_collections

from piti_jax.errors import PitiError

DATASETS = ("shapes", "coco_stuff", "ade20k", "coco_sketch", "diode", "text_pairs")
TASKS = ("mask", "sketch", "depth", "text")
CONDITION_CHANNELS = {"mask": 3, "sketch": 1, "depth": 6}
TEXT_FORMATS = ("tsv", "folder", "webdataset", "coco_captions")
EDGE_DETECTORS = ("auto", "hed", "canny")
ADE20K_SOURCES = ("challenge", "full_release")
DEGRADATIONS = ("bsrgan_light", "bicubic")
L0_SMOOTHING = ("fixed", "reference")


def default_data_config() -> ml_collections.ConfigDict:
  """The data config with its defaults: the built-in `shapes` dataset, mask task, 64x64 base model.

  Fields:
    name: dataset, one of DATASETS.
    task: "mask" | "sketch" | "depth" (condition image) or "text" (captions -> tokens).
    data_dir: where prepared ArrayRecord datasets live (tfds layout: data_dir/<name>/<config>/<version>).
    manual_dir: folder (local or gs://...) with the user's raw files for the real datasets (never downloaded).
    prepare: build the dataset into data_dir when it is not prepared yet.
    train_split, eval_split: split names.
    image_size: side of the target image (64 for the base model, 256 for the upsampler).
    load_size: side images and conditions are squash-resized to first (the reference uses 256).
    condition_size: side of the condition image (the task encoder needs 256).
    low_res_size: side of the degraded low-res input for the upsampler; 0 for no "low_res".
    degradation: "bsrgan_light" (PITI's pipeline) or "bicubic" (plain resize).
    l0_smoothing: bsrgan_light's op 6 (p = 0.2): "fixed" smooths the image (the reference's bug fixed),
      "reference" blacks the low-res input out as the reference's does (about 20% of inputs black;
      for exact-replication runs). See `piti_jax.data.degradations`.
    uncond_p: probability of replacing a condition by the null condition (all ones) or the tokens by
      empty text, per example (training iterators only).
    random_crop: resize the short side to load_size and crop a random square instead of squashing.
    flip: random horizontal flip (p = 0.5) shared by image and condition (training iterators only).
    num_workers: grain worker processes (0 = in the main process).
    worker_buffer_size: batches each worker prepares ahead.
    read_threads, prefetch_records: threads reading records from the data source and how many
      records they read ahead.
    on_bad_example: "skip" (count and leave out unreadable images while preparing) or "raise".
    tokenizer: "bytes" (byte-level, no files) or a folder/file with GPT-2 BPE vocabulary
      (encoder.json + vocab.bpe, or tokenizer.json).
    max_text_len: token sequence length L (GLIDE uses 128).
    train_size, val_size, seed: size and seed of the generated `shapes` dataset.
    train_subset: > 0: training iterators read only the first train_subset records of the train
      split (few-shot finetuning); 0 reads the whole split.
    text_format: layout of the text_pairs source, one of TEXT_FORMATS.
    edge_detector: coco_sketch edge detector: "hed" (the reference's: HED edge probability > 0.6;
      needs hed_weights), "canny" (no weights; a deviation, see `piti_jax.data.edges`) or "auto"
      (the default: HED when hed_weights is given, else Canny); see `edge_detector`.
    hed_weights: HED BSDS500 weights: the PyTorch port's state-dict file (network-bsds500.pytorch;
      reading it needs PyTorch) or an .npz with the same keys.
    ade20k_source: "challenge" (ADEChallengeData2016, 150 classes, VOC colours) or "full_release" (the
      full release's _seg.png colours, which the reference feeds its encoder); see
      `piti_jax.data.builders.ade20k` for the difference and why "challenge" is the default.
  """
  config = ml_collections.ConfigDict()
  config.name = "shapes"
  config.task = "mask"
  config.data_dir = "~/tensorflow_datasets"
  config.manual_dir = ""
  config.prepare = True
  config.train_split = "train"
  config.eval_split = "validation"
  config.image_size = 64
  config.load_size = 256
  config.condition_size = 256
  config.low_res_size = 0
  config.degradation = "bsrgan_light"
  config.l0_smoothing = "fixed"
  config.uncond_p = 0.0
  config.random_crop = False
  config.flip = True
  config.num_workers = 0
  config.worker_buffer_size = 2
  config.read_threads = 4
  config.prefetch_records = 64
  config.on_bad_example = "skip"
  config.tokenizer = "bytes"
  config.max_text_len = 128
  config.train_size = 2000
  config.val_size = 200
  config.seed = 0
  config.train_subset = 0
  config.text_format = "tsv"
  config.edge_detector = "auto"
  config.hed_weights = ""
  config.ade20k_source = "challenge"
  return config


def edge_detector(config: ml_collections.ConfigDict) -> str:
  """The coco_sketch edge detector a data config selects: "hed" or "canny" ("auto": HED iff hed_weights)."""
  if config.edge_detector == "auto":
    return "hed" if config.hed_weights else "canny"
  return config.edge_detector


def check_data_config(config: ml_collections.ConfigDict) -> None:
  """Raises PitiError for an inconsistent data config, saying which field to change."""
  if config.name not in DATASETS:
    raise PitiError(f"data.name={config.name!r} is unknown; choose one of {', '.join(DATASETS)}.")
  if config.task not in TASKS:
    raise PitiError(f"data.task={config.task!r} is unknown; choose one of {', '.join(TASKS)}.")
  if config.name == "text_pairs" and config.task != "text":
    raise PitiError("data.name='text_pairs' has captions only; set data.task='text'.")
  allowed = {"coco_stuff": ("mask",), "ade20k": ("mask",), "coco_sketch": ("sketch",), "diode": ("depth",)}
  if config.name in allowed and config.task not in allowed[config.name]:
    raise PitiError(f"data.name={config.name!r} supports task {' or '.join(allowed[config.name])}, "
                    f"not {config.task!r}.")
  if config.train_subset < 0:
    raise PitiError(f"data.train_subset={config.train_subset} must be >= 0 (0 reads the whole train split).")
  if not 0.0 <= config.uncond_p <= 1.0:
    raise PitiError(f"data.uncond_p={config.uncond_p} must be in [0, 1].")
  if config.image_size > config.load_size or config.condition_size > config.load_size:
    raise PitiError(f"data.image_size ({config.image_size}) and data.condition_size ({config.condition_size}) "
                    f"may not exceed data.load_size ({config.load_size}).")
  if config.low_res_size and config.load_size % config.low_res_size:
    raise PitiError(f"data.low_res_size={config.low_res_size} must divide data.load_size={config.load_size}.")
  if config.degradation not in DEGRADATIONS:
    raise PitiError(f"data.degradation={config.degradation!r} is unknown; choose one of {DEGRADATIONS}.")
  if config.l0_smoothing not in L0_SMOOTHING:
    raise PitiError(f"data.l0_smoothing={config.l0_smoothing!r} is unknown; choose one of {L0_SMOOTHING}.")
  if config.on_bad_example not in ("skip", "raise"):
    raise PitiError(f"data.on_bad_example={config.on_bad_example!r} must be 'skip' or 'raise'.")
  if config.text_format not in TEXT_FORMATS:
    raise PitiError(f"data.text_format={config.text_format!r} is unknown; choose one of {TEXT_FORMATS}.")
  if config.edge_detector not in EDGE_DETECTORS:
    raise PitiError(f"data.edge_detector={config.edge_detector!r} is unknown; choose one of {EDGE_DETECTORS}.")
  if config.ade20k_source not in ADE20K_SOURCES:
    raise PitiError(f"data.ade20k_source={config.ade20k_source!r} is unknown; choose one of {ADE20K_SOURCES}.")
  if config.name == "coco_sketch" and config.edge_detector == "hed" and not config.hed_weights:
    raise PitiError("data.edge_detector='hed' needs data.hed_weights, the path of HED's BSDS500 weights "
                    "(network-bsds500.pytorch or a converted .npz); or use data.edge_detector='canny'.")
