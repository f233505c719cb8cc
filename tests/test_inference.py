"""mode=sample end to end with tiny random checkpoints (16x16 base, 16->32 upsampler), and its bad inputs.

The two samplers are compiled once (module fixture) and reused by every test.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from piti_jax import inference
from piti_jax.data import conditions, shapes_scenes
from piti_jax.errors import PitiError
from piti_jax.models import checkpoint as model_checkpoint
from piti_jax.models import presets
from piti_jax.train import partition
from tests.train_helpers import REPO, load_config

TINY = dict(model_channels=32, num_head_channels=32, xf_width=32, xf_heads=2, cond_size=32,
            cnn_hidden=(4, 8, 8, 16, 32))


def _save_random(directory: str, preset: str, **overrides) -> str:
  config = presets.get_config(preset, **overrides)
  model = presets.build_model(config, rngs=nnx.Rngs(0))
  model_checkpoint.save_model(model, directory)
  return directory


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  root = tmp_path_factory.mktemp("ckpt")
  return {"base": _save_random(str(root / "base"), "tiny_piti64", image_size=16, **TINY),
          "upsampler": _save_random(str(root / "up"), "tiny_piti_upsample64", image_size=32, **TINY),
          "sketch": _save_random(str(root / "sketch"), "tiny_piti64", image_size=16, task="sketch", **TINY)}


def _mask_png(path, seed: int) -> str:
  labels = shapes_scenes.generate_scene(seed, 1, seed).labels
  Image.fromarray(conditions.colorize_labels(labels, num_classes=shapes_scenes.NUM_CLASSES)).save(path)
  return str(path)


@pytest.fixture(scope="module")
def mask_folder(tmp_path_factory):
  folder = tmp_path_factory.mktemp("masks")
  for i in range(3):
    _mask_png(folder / f"mask_{i}.png", i)
  return str(folder)


def sample_config(checkpoints, paths, **fields):
  config = load_config("sample")
  config.base.checkpoint = checkpoints["base"]
  config.upsampler.checkpoint = checkpoints["upsampler"]
  config.base.sample.respacing = "2"
  config.upsampler.sample.respacing = "2"
  config.input.paths = paths
  config.data.name = "shapes"
  config.batch_size = 8
  for name, value in fields.items():
    config[name] = value
  return config


@pytest.fixture(scope="module")
def sampled(checkpoints, mask_folder, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("run") / "samples")
  return out, inference.run_pipeline(sample_config(checkpoints, mask_folder), out)


def test_sample_writes_pngs_grid_and_manifest(sampled):
  out, manifest = sampled
  names = ["mask_0", "mask_1", "mask_2"]
  assert sorted(os.listdir(out)) == ["base", "condition", "grid.png", "manifest.json", "upsampled"]
  assert not os.path.exists(out + ".tmp")
  for folder, size in (("base", 16), ("upsampled", 32), ("condition", 32)):
    assert sorted(os.listdir(os.path.join(out, folder))) == [f"{n}.png" for n in names]
    assert Image.open(os.path.join(out, folder, "mask_0.png")).size == (size, size)
  grid = Image.open(os.path.join(out, "grid.png"))
  assert grid.size == (3 * (128 + 2) + 2, 3 * (128 + 2) + 2)  # condition | base | upsampled, 3 rows
  with open(os.path.join(out, "manifest.json")) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(manifest))
  assert saved["names"] == names and saved["seed"] == 0
  assert saved["base"]["sampler"] == {"sampler": "ddpm", "respacing": "2", "temperature": 1.0, "clip_denoised": True,
                                      "guidance": "plain", "guidance_scale": 1.3}
  assert saved["upsampler"]["sampler"]["temperature"] == 0.997 and saved["upsampler"]["sampler"]["guidance"] == "none"
  assert saved["base"]["network_evaluations_per_image"] == 4 and saved["upsampler"]["network_evaluations_per_image"] == 2
  assert set(saved["timings"]) >= {"base_s", "upsample_s", "total_s", "images_per_s"}


def test_the_upsampler_gets_the_rounded_8bit_base_output(sampled, checkpoints, mask_folder, tmp_path):
  out, _ = sampled
  base = np.asarray(Image.open(os.path.join(out, "base", "mask_1.png")))
  # Same seed, same inputs: the base output is reproduced exactly, and quantisation rounds (not truncates).
  paths = ",".join(os.path.join(mask_folder, f"mask_{i}.png") for i in (0, 1))  # mask_1 is image 1 again
  again = inference.run_pipeline(sample_config(checkpoints, paths), str(tmp_path / "again"))
  assert again["names"] == ["mask_0", "mask_1"]
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "again" / "base" / "mask_1.png")), base)
  # The upsampler ran on exactly the written (rounded 8-bit) base images.
  group = sample_config(checkpoints, mask_folder).upsampler
  upsampler = inference.load_model(checkpoints["upsampler"], "upsampler", group, partition.make_mesh(), "float32")
  bases = np.stack([np.asarray(Image.open(os.path.join(out, "base", f"mask_{i}.png"))) for i in range(3)])
  conds = np.stack([np.asarray(Image.open(os.path.join(out, "condition", f"mask_{i}.png"))) for i in range(3)])
  upsampled = inference._sample_all(upsampler, conds.astype(np.float32) / 127.5 - 1.0, inference._unit(bases),
                                    jax.random.fold_in(jax.random.key(0), 1), 8)
  for i in range(3):
    np.testing.assert_array_equal(upsampled[i], np.asarray(Image.open(os.path.join(out, "upsampled", f"mask_{i}.png"))))
  levels = np.array([-1.0, -0.99, 0.0031, 0.99, 1.0], np.float32)
  np.testing.assert_array_equal(inference.grids.to_uint8(levels), [0, 1, 128, 254, 255])


@pytest.mark.parametrize("case", ["palette", "mode", "empty", "missing_checkpoint", "task", "upsampler_as_base",
                                  "upsampler_idle"])
def test_bad_input_is_a_one_line_user_error_and_writes_nothing(case, checkpoints, mask_folder, tmp_path):
  paths, ckpt, fields = mask_folder, dict(checkpoints), {}
  if case == "palette":
    bad = np.zeros((32, 32, 3), np.uint8)
    bad[:8] = (12, 34, 56)
    Image.fromarray(bad).save(tmp_path / "odd.png")
    paths, message = str(tmp_path / "odd.png"), "odd.png"
  elif case == "mode":
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "grey.png")
    paths, message = str(tmp_path / "grey.png"), "must be an RGB image"
  elif case == "empty":
    os.makedirs(tmp_path / "nothing")
    paths, message = str(tmp_path / "nothing"), "has no condition images"
  elif case == "missing_checkpoint":
    ckpt["base"], message = str(tmp_path / "nope"), "does not exist"
  elif case == "task":
    ckpt["base"], message = checkpoints["sketch"], "task 'sketch'"
  elif case == "upsampler_idle":  # files have no real low-res images for an upsampler that skips the samples
    fields, message = {"upsample_samples": False}, "leaves the upsampler nothing to do"
  else:
    ckpt["base"], message = checkpoints["upsampler"], "is an upsampler"
  out = tmp_path / "out"
  with pytest.raises(PitiError, match=message):
    inference.run_pipeline(sample_config(ckpt, paths, **fields), str(out))
  assert not out.exists() and not os.path.exists(f"{out}.tmp")


def test_main_reports_a_bad_input_in_one_line(tmp_path):
  os.makedirs(tmp_path / "empty")
  result = subprocess.run(
      [sys.executable, "-m", "piti_jax.main", "--config=configs/sample.py", f"--workdir={tmp_path / 'w'}",
       f"--config.base.checkpoint={tmp_path / 'missing'}", f"--config.input.paths={tmp_path / 'empty'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO))
  assert result.returncode == 2 and "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("piti-jax: error:")]
  assert len(errors) == 1 and "missing" in errors[0] and "does not exist" in errors[0]
  assert not (tmp_path / "w" / "samples").exists()


def test_sketch_and_depth_inputs_are_read_as_the_encoder_expects(tmp_path):
  scene = shapes_scenes.generate_scene(0, 1, 3)
  sketches, depths = tmp_path / "sketches", tmp_path / "depth"
  os.makedirs(sketches)
  os.makedirs(depths)
  Image.fromarray(scene.sketch).save(sketches / "a.png")
  Image.fromarray(conditions.render_normals(scene.normals)).save(depths / "a_normal.png")
  Image.fromarray(conditions.render_depth(scene.depth, scene.depth_valid)).save(depths / "a_depth.png")
  sketch = inference.read_file_inputs(str(sketches), "sketch", None)
  assert sketch.names == ["a"] and sketch.condition(32).shape == (1, 32, 32, 1)
  depth = inference.read_file_inputs(str(depths), "depth", None)
  assert depth.names == ["a"] and depth.condition(32).shape == (1, 32, 32, 6)
  Image.fromarray(conditions.render_depth(scene.depth, scene.depth_valid)[:128]).save(depths / "a_depth.png")
  with pytest.raises(PitiError, match="a_depth.png: size 256x128 differs from the normal map"):
    inference.read_file_inputs(str(depths), "depth", None).condition(32)
  os.remove(depths / "a_depth.png")
  with pytest.raises(PitiError, match="a_depth.png is missing"):
    inference.read_file_inputs(str(depths), "depth", None)


def test_evaluate_reports_missing_inception_weights_before_any_work(sampled, tmp_path):
  from piti_jax.evaluation import runner

  config = load_config("evaluate")
  config.samples = f"tiny={sampled[0]}"
  config.inception_weights = str(tmp_path / "inception-2015-12-05.pt")
  with pytest.raises(PitiError, match="inception-2015-12-05.pt"):
    runner.run(config, str(tmp_path / "eval"))
  assert not (tmp_path / "eval").exists()
  config.samples = str(tmp_path / "not_sampled")
  with pytest.raises(PitiError, match="not_sampled has no manifest.json"):
    runner.run(config, str(tmp_path / "eval"))
