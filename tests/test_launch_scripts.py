"""The launch scripts' argument handling and the exact commands of their dry runs (bash, no cloud)."""

import os
import pathlib
import shlex
import subprocess

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parent.parent / "launch"
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TPU_", "ZONE", "PROJECT", "CREATE"))}


def launch(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True, timeout=60,
                        check=False, env={**CLEAN, **env})


def commands(result: subprocess.CompletedProcess) -> list[str]:
  assert result.returncode == 0, result.stderr
  return [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize("script", ["tpu_pod.sh", "slurm_gpu.sh", "local_multiprocess.sh"])
def test_without_arguments_the_usage_is_printed_with_status_2(script):
  result = launch(script)
  assert result.returncode == 2 and "Variables (environment" in result.stdout and "DRY_RUN" in result.stdout


@pytest.mark.parametrize("env, message", [
    ({}, "TPU_NAME is not set"),
    ({"TPU_NAME": "pod"}, "ZONE is not set"),
    ({"TPU_NAME": "pod", "ZONE": "z", "CREATE": "1"}, "ACCELERATOR_TYPE is not set"),
    ({"TPU_NAME": "pod", "ZONE": "z", "CREATE": "1", "ACCELERATOR_TYPE": "v4-32"}, "RUNTIME_VERSION is not set"),
])
def test_tpu_pod_refuses_a_missing_variable(env, message):
  result = launch("tpu_pod.sh", "configs/shapes.py:pretrain", "gs://bucket/run", DRY_RUN="1", **env)
  assert result.returncode == 2 and not result.stdout
  assert result.stderr.startswith(f"tpu_pod.sh: {message}") and result.stderr.count("\n") == 1


def test_tpu_pod_refuses_a_local_workdir():
  result = launch("tpu_pod.sh", "configs/shapes.py:pretrain", "/tmp/run", DRY_RUN="1", TPU_NAME="pod", ZONE="z")
  assert result.returncode == 2 and "WORKDIR must be a gs:// URI" in result.stderr


def test_tpu_pod_dry_run_creates_copies_runs_and_cleans_up():
  result = launch("tpu_pod.sh", "configs/coco_stuff_mask.py:stage2", "gs://bucket/runs/s2", "--config.mesh.fsdp=8",
                  DRY_RUN="1", TPU_NAME="pod", ZONE="us-central2-b", PROJECT="proj", CREATE="1",
                  ACCELERATOR_TYPE="v4-32", RUNTIME_VERSION="tpu-ubuntu2204-base", SPOT="1", CLEANUP="1",
                  TMPDIR="/tmp")
  tpus = ["gcloud", "compute", "tpus"]
  where = ["--zone=us-central2-b", "--project=proj"]
  assert [shlex.split(line) for line in commands(result)] == [
      tpus + ["queued-resources", "create", "pod-qr", *where, "--node-id=pod", "--accelerator-type=v4-32",
              "--runtime-version=tpu-ubuntu2204-base", "--spot"],
      ["tar", "-czf", "/tmp/piti_jax_pod.tar.gz", "-C", str(LAUNCH.parent), "--exclude=.git", "--exclude=.venv",
       "--exclude=*.pyc", "."],
      tpus + ["tpu-vm", "scp", "/tmp/piti_jax_pod.tar.gz", "pod:piti_jax.tar.gz", *where, "--worker=all"],
      tpus + ["tpu-vm", "ssh", "pod", *where, "--worker=all",
              "--command=rm -rf piti_jax && mkdir -p piti_jax && tar -xzf piti_jax.tar.gz -C piti_jax && "
              "python3 -m pip install -q -e piti_jax"],
      tpus + ["tpu-vm", "ssh", "pod", *where, "--worker=all",
              "--command=cd piti_jax && python3 -m piti_jax.main --config=configs/coco_stuff_mask.py:stage2 "
              "--workdir=gs://bucket/runs/s2 --config.mesh.fsdp=8 2>&1 | tee -a ~/piti_jax_run.log; "
              "exit ${PIPESTATUS[0]}"],
      tpus + ["queued-resources", "delete", "pod-qr", *where, "--force", "--quiet"],
  ]


def test_tpu_pod_dry_run_on_an_existing_slice_keeps_it():
  lines = commands(launch("tpu_pod.sh", "configs/shapes.py:pretrain", "gs://b/r", DRY_RUN="1", TPU_NAME="pod",
                          ZONE="z", SETUP="0"))
  assert not any("queued-resources" in line or " delete " in line for line in lines)
  assert len(lines) == 4 and "pip" not in lines[2] and "piti_jax.main" in lines[3]


def test_slurm_refuses_outside_an_allocation_and_dry_run_prints_srun():
  result = launch("slurm_gpu.sh", "configs/shapes.py:pretrain", "/shared/run")
  assert result.returncode == 2 and "SLURM_JOB_ID is not set" in result.stderr
  lines = commands(launch("slurm_gpu.sh", "configs/shapes.py:pretrain", "/shared/run", "--config.mesh.fsdp=2",
                          DRY_RUN="1"))
  assert [shlex.split(line) for line in lines] == [
      ["srun", "--kill-on-bad-exit=1", "bash", "-c", 'export CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"; exec "$0" "$@"',
       "python3", "-m", "piti_jax.main", "--config=configs/shapes.py:pretrain", "--workdir=/shared/run",
       "--config.mesh.fsdp=2"]]


def test_local_multiprocess_checks_its_count_and_dry_run_prints_one_command_per_process():
  result = launch("local_multiprocess.sh", "two", "configs/shapes.py:pretrain", "/tmp/run")
  assert result.returncode == 2 and "NUM_PROCESSES must be a positive integer" in result.stderr
  lines = commands(launch("local_multiprocess.sh", "2", "configs/shapes.py:pretrain", "/tmp/run", DRY_RUN="1",
                          PORT="4321", DEVICES_PER_PROCESS="2"))
  assert lines == [
      f"env JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 python3 -m piti_jax.main "
      f"--config=configs/shapes.py:pretrain --workdir=/tmp/run --coordinator_address=127.0.0.1:4321 "
      f"--num_processes=2 --process_id={index}" for index in range(2)]
