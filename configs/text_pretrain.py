"""Text-to-image pretraining of the GLIDE-layout prior: 64px base and 64->256 upsampler.

Captions come from data.name (text_pairs: a caption file/folder/webdataset in
data.manual_dir, see piti_jax.data; or coco_stuff with data.task=text for COCO captions):

  python -m piti_jax.main --config=configs/text_pretrain.py:base --workdir=runs/prior/base \
      --config.data.manual_dir=PAIRS --config.data.tokenizer=GPT2_BPE_DIR
  python -m piti_jax.main --config=configs/text_pretrain.py:upsample --workdir=runs/prior/upsample \
      --config.data.manual_dir=PAIRS --config.data.tokenizer=GPT2_BPE_DIR

Captions are replaced by empty text with probability 0.2 (data.uncond_p) for guidance.
Add --config.mesh.fsdp=N and --config.model.dtype=bfloat16 on pods. The finetune configs
take the resulting workdir as --config.init.prior.path.
"""

from piti_jax.train import config as train_config


def get_config(arg: str = "base"):
  job = train_config.parse_job(arg, ("base", "upsample"))
  return train_config.text_pretrain_config(job, dataset="text_pairs")
