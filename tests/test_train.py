"""The train loop on 8 fake CPU devices with tiny shapes models.

Compiled steps are shared through the loop's function cache (keyed on loop.TrainSpec): every
test that uses the pretrain config on the default mesh reuses one compiled step.
"""

import io
import json
import os
import re

import jax
import numpy as np
import pytest
from PIL import Image

from piti_jax.errors import PitiError
from piti_jax.models import checkpoint as model_checkpoint
from piti_jax.train import loop, partition
from piti_jax.param_paths import flatten
from tests.train_helpers import event_files, read_events, shapes_config

PRETRAIN_STEPS = 30


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def assert_trees_equal(a, b):
  flat_a, flat_b = flatten(a), flatten(b)
  assert flat_a.keys() == flat_b.keys()
  for path in flat_a:
    np.testing.assert_array_equal(flat_a[path], flat_b[path], err_msg=path)


def kernels_all_changed(a, b):
  """True when every kernel of `a` differs from the same kernel of `b` somewhere."""
  flat_a, flat_b = flatten(a), flatten(b)
  kernels = [p for p in flat_a if p.endswith("kernel")]
  return bool(kernels) and all(not np.array_equal(flat_a[p], flat_b[p]) for p in kernels)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def prior(data_dir, tmp_path_factory):
  """A text-to-image prior pretrained on shapes for PRETRAIN_STEPS steps: (workdir, result, on_metrics calls)."""
  workdir = str(tmp_path_factory.mktemp("prior"))
  config = shapes_config("pretrain", data_dir, num_steps=PRETRAIN_STEPS, save_every=PRETRAIN_STEPS,
                         eval_every=PRETRAIN_STEPS, sample_every=PRETRAIN_STEPS, sample_batch_size=2,
                         export=True)
  config.sample.respacing = "2"
  calls = []
  return workdir, loop.train(config, workdir, on_metrics=lambda step, values: calls.append((step, values))), calls


def test_pretraining_on_shapes_lowers_the_loss(prior):
  _, result, _ = prior
  losses = [metrics["loss"] for _, metrics in result.history if "loss" in metrics]
  assert len(losses) == PRETRAIN_STEPS
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
  assert result.step == PRETRAIN_STEPS
  validation = [metrics for _, metrics in result.history if "val_loss" in metrics]
  assert len(validation) == 1 and np.isfinite(validation[0]["val_loss"])
  grid = np.asarray(Image.open(os.path.join(prior[0], "samples", f"step_{PRETRAIN_STEPS:07d}.png")))
  assert grid.shape == (2 * (128 + 2) + 2, 2 * (128 + 2) + 2, 3)  # 2 rows of sample | ground truth, 4x enlarged
  exported = model_checkpoint.load_params(os.path.join(prior[0], "export", "ema_0.99"))
  assert_trees_equal(exported, host(loop.merge_trees(result.state.ema["0.99"], result.state.frozen)))


def test_tensorboard_events_hold_the_logged_metrics_and_the_sample_grid(prior):
  workdir, result, calls = prior
  files = event_files(workdir)
  assert len(files) == 1  # one run, one writer
  events = read_events(files[0])
  for tag in ("loss", "val_loss"):
    logged = [(step, metrics[tag]) for step, metrics in result.history if tag in metrics]
    written = [(event.step, event.value) for event in events.Scalars(tag)]
    assert [s for s, _ in written] == [s for s, _ in logged], tag
    np.testing.assert_allclose([v for _, v in written], [v for _, v in logged], rtol=1e-6, err_msg=tag)
  speeds = events.Scalars("steps_per_sec")
  assert [e.step for e in speeds] == list(range(2, PRETRAIN_STEPS + 1)) and min(e.value for e in speeds) > 0
  # on_metrics gets the logged means plus the same rate and its ETA (none at step 1: the clock starts there).
  assert [step for step, _ in calls] == [step for step, metrics in result.history if "loss" in metrics]
  assert "steps_per_sec" not in calls[0][1]
  losses = {step: metrics["loss"] for step, metrics in result.history if "loss" in metrics}
  for (step, values), speed in zip(calls[1:], speeds):
    assert values["loss"] == losses[step]
    np.testing.assert_allclose(values["steps_per_sec"], speed.value, rtol=1e-6)
    np.testing.assert_allclose(values["eta_seconds"], (PRETRAIN_STEPS - step) / speed.value, rtol=1e-5)
  (image,) = events.Images("samples")
  grid = np.asarray(Image.open(os.path.join(workdir, "samples", f"step_{PRETRAIN_STEPS:07d}.png")))
  assert image.step == PRETRAIN_STEPS and (image.height, image.width) == grid.shape[:2]
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(image.encoded_image_string))), grid)


def test_compiled_functions_are_shared_by_equal_specs_only(data_dir):
  mesh = partition.make_mesh(-1, 1)
  config = shapes_config("pretrain", data_dir)
  spec = loop.TrainSpec.from_config(config, mesh)
  assert spec.batch_keys == ("image", "tokens", "token_mask")  # from the data config, before any batch
  loop_only = shapes_config("pretrain", data_dir, num_steps=7, log_every=3)
  loop_only.seed = 5
  assert loop.TrainSpec.from_config(loop_only, mesh) == spec
  for group, name, value in (("optim", "lr", 0.5), ("diffusion", "num_timesteps", 10), ("train", "ema_rates", (0.9,)),
                             ("model", "dtype", "bfloat16"), ("adversarial", "critic_first", False)):
    changed = shapes_config("pretrain", data_dir)
    changed[group][name] = value
    assert loop.TrainSpec.from_config(changed, mesh) != spec, (group, name)
  changed.model.overrides.model_channels = 64
  assert loop.TrainSpec.from_config(changed, mesh).model.model_channels == 64


def test_resume_is_exact(data_dir, tmp_path, monkeypatch):
  """Also with the resumed half run as `python -m piti_jax.main` runs it: the step compiled ahead of
  time for the state's and batch's shapes before the state is restored, JAX's caches released after
  the compile and again once the state is restored. The releases are counted, not done,
  so the other tests of this process keep their compiled functions (tests/test_storage_gcs.py runs
  `loop.run`, which does it)."""
  steps = 4
  whole, halves = str(tmp_path / "whole"), str(tmp_path / "halves")
  config = shapes_config("pretrain", data_dir, num_steps=steps, save_every=steps // 2)
  straight = loop.train(config, whole)
  config.train.num_steps = steps // 2
  loop.train(config, halves)
  config.train.num_steps = steps
  releases = []
  monkeypatch.setattr(jax, "clear_caches", lambda: releases.append(True))
  resumed = loop.train(config, halves, release_caches=True)
  assert releases == [True, True]
  assert resumed.step == straight.step == steps
  a, b = host(straight.state), host(resumed.state)
  assert_trees_equal(a.params, b.params)
  assert_trees_equal(a.ema, b.ema)
  for leaf_a, leaf_b in zip(jax.tree.leaves(a.opt_state), jax.tree.leaves(b.opt_state), strict=True):
    np.testing.assert_array_equal(leaf_a, leaf_b)
  np.testing.assert_array_equal(a.sampler.loss_history, b.sampler.loss_history)
  # Same data order: identical iterator positions saved with the final checkpoints.
  data_states = [open(os.path.join(w, "checkpoints", str(steps), "data", "process_0-of-1.json")).read()
                 for w in (whole, halves)]
  assert data_states[0] == data_states[1]
  assert json.loads(data_states[0])
  # Run again with no step left: the state is restored and nothing is compiled for a step.
  monkeypatch.setattr(loop._Run, "compile_step_first", lambda self: pytest.fail("compiled a step with none left"))  # pylint: disable=protected-access
  again = loop.train(config, halves, release_caches=True)
  assert again.step == steps
  assert_trees_equal(host(again.state).params, b.params)


def test_data_parallel_and_fsdp_steps_agree(data_dir):
  config = shapes_config("pretrain", data_dir)
  results = []
  for data, fsdp in ((8, 1), (2, 4)):
    config.mesh.data, config.mesh.fsdp = data, fsdp
    mesh = partition.make_mesh(data, fsdp)
    with jax.set_mesh(mesh):
      trainer = loop.Trainer(config, mesh)
      iterator, _ = loop._data_iterators(config)  # pylint: disable=protected-access
      state = trainer.create_state_for(config.seed, config.init)
      state, metrics = trainer.step(state, trainer.global_batch(next(iterator)))
      if fsdp > 1:
        shardings = jax.tree.leaves(trainer.functions.state_shardings.params)
        sharded = [s for s in shardings if "fsdp" in str(s.spec)]
        assert sharded, "no parameter is sharded over fsdp"
      results.append((host(metrics), host(state.params)))
  (metrics_dp, params_dp), (metrics_fsdp, params_fsdp) = results
  np.testing.assert_allclose(metrics_dp["loss"], metrics_fsdp["loss"], rtol=1e-5)
  for path, value in flatten(params_dp).items():
    np.testing.assert_allclose(value, flatten(params_fsdp)[path], rtol=1e-5, atol=1e-6, err_msg=path)


def test_checkpoint_of_one_mesh_resumes_on_another_with_the_same_next_step(data_dir, tmp_path):
  """Saved on data=8, resumed on data=2 x fsdp=4: same state, data position and step-3 loss."""
  from piti_jax.train import checkpoint  # pylint: disable=import-outside-toplevel

  config = shapes_config("pretrain", data_dir, num_steps=3, save_every=2)
  config.mesh.data, config.mesh.fsdp = 8, 1
  straight = loop.train(config, str(tmp_path / "straight"))
  config.train.num_steps = 2
  loop.train(config, str(tmp_path / "elastic"))
  restored = {}
  for data, fsdp in ((8, 1), (2, 4)):
    mesh = partition.make_mesh(data, fsdp)
    with jax.set_mesh(mesh):
      trainer = loop.Trainer(config, mesh)
      iterator, _ = loop._data_iterators(config)  # pylint: disable=protected-access
      saver = checkpoint.Checkpointer(str(tmp_path / "elastic"))
      state = saver.restore(2, trainer.abstract_sharded_state(), iterator, global_batch_size=8)
      saver.close()
      restored[fsdp] = (host(state), iterator.get_state())
  assert any("fsdp" in str(leaf.sharding.spec) for leaf in jax.tree.leaves(state.params))
  (a, data_a), (b, data_b) = restored[1], restored[4]
  assert data_a == data_b
  for tree_a, tree_b in ((a.params, b.params), (a.ema, b.ema), (a.opt_state, b.opt_state)):
    for leaf_a, leaf_b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b), strict=True):
      np.testing.assert_array_equal(leaf_a, leaf_b)
  config.mesh.data, config.mesh.fsdp = 2, 4
  config.train.num_steps = 3
  resumed = loop.train(config, str(tmp_path / "elastic"))
  assert [s for s, _ in resumed.history] == [3]
  np.testing.assert_allclose(resumed.history[-1][1]["loss"], straight.history[-1][1]["loss"], rtol=1e-5)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
  step = loop.Trainer.step

  def poisoned_step(trainer, state, batch):  # a NaN image in the batch of step 3
    if int(state.step) == 3:
      batch = {**batch, "image": batch["image"] * np.float32("nan")}
    return step(trainer, state, batch)

  monkeypatch.setattr(loop.Trainer, "step", poisoned_step)
  config = shapes_config("pretrain", data_dir, num_steps=6, save_every=2)
  with pytest.raises(PitiError, match="non-finite loss at step 3"):
    loop.train(config, str(tmp_path))
  assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()) == [2]


@pytest.fixture(scope="module")
def stage1(prior, data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("stage1"))
  config = shapes_config("stage1", data_dir, num_steps=3, save_every=3)
  config.init.prior.path = prior[0]
  config.init.prior.tree = "params"
  return workdir, loop.train(config, workdir)


def test_stage1_trains_only_the_encoder(prior, stage1):
  from piti_jax.train import checkpoint

  state = host(stage1[1].state)
  prior_params = checkpoint.load_trained_tree(prior[0], "params")
  assert set(state.params) == {"encoder"} and set(state.frozen) == {"decoder"}
  assert_trees_equal(state.frozen["decoder"], prior_params["decoder"])
  assert list(state.ema["0.99"]) == ["encoder"]
  moment_paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state.opt_state)]
  assert not any("decoder" in p for p in moment_paths)
  assert any("encoder" in p for p in moment_paths)


def test_stage2_trains_encoder_and_decoder(prior, stage1, data_dir):
  config = shapes_config("stage2", data_dir)
  config.init.prior.path, config.init.prior.tree = prior[0], "params"
  config.init.stage1.path, config.init.stage1.tree = stage1[0], "params"
  mesh = partition.make_mesh(-1, 1)
  with jax.set_mesh(mesh):
    trainer = loop.Trainer(config, mesh)
    iterator, _ = loop._data_iterators(config)  # pylint: disable=protected-access
    state = trainer.create_state_for(config.seed, config.init)
    before = host(state.params)
    state, _ = trainer.step(state, trainer.global_batch(next(iterator)))
    after = host(state.params)
  assert set(after) == {"encoder", "decoder"} and not jax.tree.leaves(host(state.frozen))
  assert_trees_equal(before["encoder"], host(stage1[1].state).params["encoder"])
  for part in ("encoder", "decoder"):
    changed = {p: not np.array_equal(flatten(before[part])[p], v) for p, v in flatten(after[part]).items()}
    # The InstanceNorm after the task encoder's conv1..conv5 cancels their biases (Conv2d.before_norm):
    # zero gradient, so without weight decay they stay put.
    cancelled = {p for p in changed if re.fullmatch(r"cnn\.conv[1-5]\.bias", p)}
    assert len(cancelled) == (5 if part == "encoder" else 0)
    assert not any(changed[p] for p in cancelled)
    assert np.mean([changed[p] for p in changed if p not in cancelled]) > 0.9, part


def test_upsampler_step_updates_the_discriminator(data_dir):
  config = shapes_config("upsample", data_dir)
  config.init = {}
  config.adversarial.start_step = 0
  config.data.image_size, config.data.low_res_size = 32, 16
  config.model.overrides.image_size = 32
  config.adversarial.disc_channels, config.adversarial.disc_layers = 8, 2
  mesh = partition.make_mesh(-1, 1)
  with jax.set_mesh(mesh):
    trainer = loop.Trainer(config, mesh)
    iterator, _ = loop._data_iterators(config)  # pylint: disable=protected-access
    state = trainer.create_state_for(config.seed, config.init)
    before = host(state.disc_params)
    state, metrics = trainer.step(state, trainer.global_batch(next(iterator)))
  metrics = host(metrics)
  # Biases before InstanceNorm and of the last conv get no WGAN gradient; every kernel must move.
  assert kernels_all_changed(before, host(state.disc_params))
  for name in ("perceptual", "adversarial", "critic_loss", "gradient_penalty"):
    assert np.isfinite(metrics[name]), name
  assert metrics["perceptual"] > 0


def test_checkpoint_that_does_not_fit_names_the_parameters(prior, data_dir):
  config = shapes_config("stage1", data_dir)
  config.model.overrides.model_channels = 64
  config.init.prior.path, config.init.prior.tree = prior[0], "params"
  mesh = partition.make_mesh(-1, 1)
  with jax.set_mesh(mesh):
    trainer = loop.Trainer(config, mesh)
    with pytest.raises(PitiError, match=r"does not fit the model .*decoder\..*kernel: shape"):
      trainer.create_state_for(config.seed, config.init)
