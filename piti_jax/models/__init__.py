"""Flax NNX models of PITI and GLIDE (NHWC, params float32, compute dtype float32 or bfloat16).

Entry points:
  presets.create_model(preset, *, rngs, dtype=jnp.float32, **overrides) -> PitiModel | GlideModel
  from_checkpoint(directory, *, dtype=jnp.float32) -> the ready model of a saved checkpoint
  load_into(model, directory) -> replace an existing model's params with a checkpoint's
  save_model(model, directory) / save_checkpoint(directory, params, preset=..., overrides=...)
  (checkpoint format: see piti_jax.models.checkpoint)
  python -m piti_jax.models PRESET  -> parameter table and exact total

Parameter tree (the contract with piti_jax.convert): the nnx state path of every parameter
mirrors the PyTorch reference `state_dict` key.

  PyTorch key                                    nnx path (nnx.to_flat_state of nnx.Param)
  ---------------------------------------------  -----------------------------------------------
  <prefix>.<i>.<name>                            (..., i, name): integer `nn.Sequential`/`nn.ModuleList`
                                                 indices stay integers (nnx.List); parameter-less
                                                 layers (SiLU, Identity, Dropout) keep their index.
  ....weight of a Conv2d    (O, I, kh, kw)       (..., 'kernel') (kh, kw, I, O)    = w.transpose(2, 3, 1, 0)
  ....weight of a Linear    (O, I)               (..., 'kernel') (I, O)            = w.T
  ....weight of a Conv1d k=1 (O, I, 1)           (..., 'kernel') (I, O)            = w[:, :, 0].T
        (qkv, encoder_kv, proj_out of the UNet attention blocks)
  ....weight of GroupNorm / LayerNorm / InstanceNorm (C,)  (..., 'scale') (C,)
  ....bias (any layer)                           (..., 'bias') unchanged
  token_embedding.weight (vocab, W)              ('encoder', 'token_embedding', 'embedding') unchanged
  positional_embedding, padding_embedding,       same name, unchanged shape, directly under 'encoder'
  cls_token                                      (PITI: (1, 257, W) and (1, 1, W); GLIDE: (128, W))

Prefixes:
  PITI (base_mask.pt, ...): keys are used as they are: `encoder.*` -> ('encoder', ...),
    `decoder.*` -> ('decoder', ...), including `decoder.transformer_proj`.
  GLIDE (base.pt, upsample.pt) has no prefixes. The UNet keys (time_embed, input_blocks,
    middle_block, output_blocks, out) go under ('decoder', ...); the text side
    (transformer.*, token_embedding, positional_embedding, padding_embedding, final_ln)
    under ('encoder', ...); and the top-level `transformer_proj` goes to
    ('decoder', 'transformer_proj') -- in every model the projection of the pooled
    condition lives in the decoder, as in PITI, so a GLIDE checkpoint's ('decoder', ...)
    subtree initialises a PITI decoder as it is.

Examples: `decoder.input_blocks.5.1.qkv.weight` (192, 64, 1) -> ('decoder', 'input_blocks', 5, 1,
'qkv', 'kernel') (64, 192); `decoder.input_blocks.1.0.out_layers.3.weight` (32, 32, 3, 3) ->
('decoder', 'input_blocks', 1, 0, 'out_layers', 3, 'kernel') (3, 3, 32, 32);
`encoder.transformer.resblocks.0.attn.c_qkv.weight` (384, 128) -> ('encoder', 'transformer',
'resblocks', 0, 'attn', 'c_qkv', 'kernel') (128, 384); `encoder.cnn.norm1.weight` ->
('encoder', 'cnn', 'norm1', 'scale').

Fused projections keep the reference's channel order, so no permutation is needed beyond
the transposes above: qkv/c_qkv outputs are laid out (head, [q, k, v], head_dim) and
encoder_kv outputs (head, [k, v], head_dim).
"""

from piti_jax.models.checkpoint import from_checkpoint, load_into, load_params, save_checkpoint, save_model
from piti_jax.models.piti import GlideModel, ModelConfig, PitiModel
from piti_jax.models.presets import PRESETS, create_model, get_config

__all__ = [
    "GlideModel", "ModelConfig", "PRESETS", "PitiModel", "create_model", "from_checkpoint", "get_config",
    "load_into", "load_params", "save_checkpoint", "save_model",
]
