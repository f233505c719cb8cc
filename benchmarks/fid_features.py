"""FID costs on this machine, as JSON lines.

1. The JAX FID Inception-v3: compile seconds and images/s on 256x256 uint8 images at a batch
   size (default 32), over the devices JAX sees.
2. The Frechet distance of two 2048-d Gaussians (full-rank covariances from 4096 features each):
   seconds of the default eigenvalue method and of pytorch-fid's SciPy sqrtm, and their values.
3. KID (100 subsets) of two sets of 2000 features: seconds.

  python benchmarks/fid_features.py [--batch-size 32] [--batches 3]
"""

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from piti_jax.data.shapes_scenes import generate_scene
from piti_jax.evaluation import fid, inception


def _timed(function, *args, **kwargs):
  start = time.perf_counter()
  value = function(*args, **kwargs)
  return value, time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--batches", type=int, default=3, help="timed batches after the compiling one")
  args = parser.parse_args()
  device = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared)"

  network = inception.load_inception()
  images = np.stack([generate_scene(0, 1, index % 64).image for index in range(args.batch_size)])
  _, first = _timed(network.features, images, args.batch_size)
  _, steady = _timed(network.features, np.concatenate([images] * args.batches), args.batch_size)
  print(json.dumps({"benchmark": "fid_inception_features", "batch_size": args.batch_size,
                    "devices": jax.local_device_count(), "platform": jax.default_backend(), "device": device,
                    "compile_seconds": round(first - steady / args.batches, 1),
                    "images_per_second": round(args.batches * args.batch_size / steady, 2)}))

  rng = np.random.default_rng(0)
  features1 = rng.gamma(2.0, size=(4096, inception.FEATURE_DIM)) * 0.1
  features2 = rng.gamma(2.2, size=(4096, inception.FEATURE_DIM)) * 0.1
  statistics = (*fid.statistics(features1), *fid.statistics(features2))
  eigen, eigen_seconds = _timed(fid.frechet_distance, *statistics, method="eigen")
  sqrtm, sqrtm_seconds = _timed(fid.frechet_distance, *statistics, method="sqrtm")
  print(json.dumps({"benchmark": "frechet_distance", "dim": inception.FEATURE_DIM, "device": device,
                    "eigen_seconds": round(eigen_seconds, 1), "sqrtm_seconds": round(sqrtm_seconds, 1),
                    "eigen": eigen, "sqrtm": sqrtm}))

  _, kid_seconds = _timed(fid.kernel_inception_distance, features1[:2000], features2[:2000])
  print(json.dumps({"benchmark": "kernel_inception_distance", "images_per_set": 2000, "subsets": fid.KID_SUBSETS,
                    "subset_size": fid.KID_SUBSET_SIZE, "device": device, "seconds": round(kid_seconds, 1)}))


if __name__ == "__main__":
  main()
