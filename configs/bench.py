"""Train-step benchmark sizes (no dataset needed; benchmarks/train_step.py feeds random batches).

  python benchmarks/train_step.py --config=configs/bench.py:tiny --modes=stage1,stage2
  python benchmarks/train_step.py --config=configs/bench.py:small --modes=stage1,stage2 --steps=5

`tiny` and `small` use the bench_tiny / bench_small PITI presets at 64x64 with 256x256 mask
conditions; the modes set the trainable parameters (stage1: encoder only, stage2: all).
"""

from piti_jax.train import config as train_config


def get_config(arg: str = "tiny"):
  size = train_config.parse_job(arg, ("tiny", "small"))
  config = train_config.default_config()
  config.model.preset = f"bench_{size}"
  config.data.name = "shapes"
  config.data.task = "mask"
  config.train.global_batch_size = 8
  config.train.ema_rates = (0.9999,)
  return config
