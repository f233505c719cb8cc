"""GLIDE's text transformer (the reference `xf.py` blocks) and the text-side condition encoder.

The pre-LN transformer here is shared with the PITI task encoder. Module names mirror the
reference: `transformer.resblocks[i].{attn.c_qkv, attn.c_proj, ln_1, mlp.c_fc, mlp.c_proj,
ln_2}`, `token_embedding`, `positional_embedding`, `padding_embedding`, `final_ln`.

The residual stream stays float32; the matmuls run in `dtype`, LayerNorms and the softmax in float32.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from piti_jax.errors import PitiError
from piti_jax.models.layers import (Dense, Init, LayerNorm, exact_gelu, new_param, qkv_attention, recomputed_in_backward,
                                     split_heads)

EMBEDDING_INIT = Init("normal", 0.01)  # learned tables the reference leaves uninitialised


class MultiheadAttention(nnx.Module):
  """Self-attention: c_qkv = Linear(W -> 3W) laid out (head, [q,k,v], d), c_proj = Linear(W -> W).

  Called as attn(x, norm) = attention of norm(x): x float32 (B, L, W), norm the block's pre-norm,
  whose output is recomputed in the backward pass instead of kept (`LayerNorm.into`); output
  (B, L, W) in `dtype`. No mask (as the reference).
  """

  def __init__(self, width: int, heads: int, *, dtype: jnp.dtype, rngs: nnx.Rngs | None):
    if width % heads:
      raise PitiError(f"transformer width {width} is not divisible by {heads} heads; change xf_heads.")
    self.heads = heads
    self.c_qkv = Dense(width, 3 * width, dtype=dtype, rngs=rngs)
    self.c_proj = Dense(width, width, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, norm: LayerNorm) -> jax.Array:
    q, k, v = split_heads(norm.into(self.c_qkv, x), self.heads, 3)
    b, length = x.shape[:2]
    return self.c_proj(qkv_attention(q, k, v).reshape(b, length, -1))


class MLP(nnx.Module):
  """c_fc = Linear(W -> 4W), exact (erf) GELU, c_proj = Linear(4W -> W).

  Called as mlp(x, norm) = MLP of norm(x), x float32 (B, L, W) -> (B, L, W) in `dtype`. Of the
  (B, L, 4W) activations only c_fc's output is kept for the backward pass: the norm's output and
  the GELU's are recomputed (`Dense.recomputing`).
  """

  def __init__(self, width: int, *, dtype: jnp.dtype, rngs: nnx.Rngs | None):
    self.c_fc = Dense(width, 4 * width, dtype=dtype, rngs=rngs)
    self.c_proj = Dense(4 * width, width, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, norm: LayerNorm) -> jax.Array:
    return self.c_proj.recomputing(exact_gelu, norm.into(self.c_fc, x))


class ResidualAttentionBlock(nnx.Module):
  """Pre-LN block: x + attn(ln_1(x)), then + mlp(ln_2(x)). float32 (B, L, W) -> float32 (B, L, W)."""

  def __init__(self, width: int, heads: int, *, dtype: jnp.dtype, rngs: nnx.Rngs | None):
    self.attn = MultiheadAttention(width, heads, dtype=dtype, rngs=rngs)
    self.ln_1 = LayerNorm(width)
    self.mlp = MLP(width, dtype=dtype, rngs=rngs)
    self.ln_2 = LayerNorm(width)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(x, self.ln_1).astype(jnp.float32)
    return x + self.mlp(x, self.ln_2).astype(jnp.float32)


class Transformer(nnx.Module):
  """`layers` ResidualAttentionBlocks in `resblocks`. (B, L, W) -> float32 (B, L, W).

  With `recompute`, each block's backward pass runs the block again from its input
  (`recomputed_in_backward`): a block keeps only its (B, L, W) input between the passes, not its
  LayerNorm outputs, q, k, v, attention output and (B, L, 4W) MLP activations.
  """

  def __init__(self, width: int, layers: int, heads: int, *, recompute: bool = False, dtype: jnp.dtype,
               rngs: nnx.Rngs | None):
    self.recompute = recompute
    self.resblocks = nnx.List([ResidualAttentionBlock(width, heads, dtype=dtype, rngs=rngs) for _ in range(layers)])

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    for block in self.resblocks:
      x = recomputed_in_backward(block, x) if self.recompute else block(x)
    return x


class Embedding(nnx.Module):
  """Token embedding table `embedding` float32 (vocab, W), N(0, 1) init as torch nn.Embedding.

  Input int (B, L); output float32 (B, L, W).
  """

  def __init__(self, vocab: int, width: int, *, rngs: nnx.Rngs | None):
    self.embedding = new_param(Init("normal", 1.0), (vocab, width), rngs, (0, 1))

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return jnp.take(self.embedding[...], tokens, axis=0)


class TextEncoder(nnx.Module):
  """GLIDE's text side: tokens -> (B, L, W) states for the decoder and the last token's state.

  Params: token_embedding.embedding (vocab, W); positional_embedding (text_ctx, W);
  padding_embedding (text_ctx, W) replacing the embeddings at masked-out positions;
  transformer; final_ln. The reference leaves the positional and padding tables
  uninitialised (its weights come from a checkpoint); here they start as N(0, 0.01^2).
  """

  def __init__(self, *, vocab: int, text_ctx: int, width: int, layers: int, heads: int, recompute: bool = False,
               dtype: jnp.dtype, rngs: nnx.Rngs | None):
    self.text_ctx = text_ctx
    self.token_embedding = Embedding(vocab, width, rngs=rngs)
    self.positional_embedding = new_param(EMBEDDING_INIT, (text_ctx, width), rngs, (0, 1))
    self.padding_embedding = new_param(EMBEDDING_INIT, (text_ctx, width), rngs, (0, 1))
    self.transformer = Transformer(width, layers, heads, recompute=recompute, dtype=dtype, rngs=rngs)
    self.final_ln = LayerNorm(width)

  def __call__(self, tokens: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes token ids.

    Args:
      tokens: int (B, text_ctx) token ids.
      mask: bool (B, text_ctx), True at real tokens, False at padding.
    Returns:
      (states float32 (B, text_ctx, W) for the decoder's encoder_kv,
       pooled float32 (B, W) = state of the last position, for transformer_proj).
    """
    if tokens.ndim != 2 or tokens.shape[1] != self.text_ctx or mask.shape != tokens.shape:
      raise PitiError(f"text condition must be tokens and mask of shape (B, {self.text_ctx}); got tokens "
                      f"{tokens.shape} and mask {mask.shape}. Pad or truncate to text_ctx={self.text_ctx}.")
    x = self.token_embedding(tokens) + self.positional_embedding[...][None]
    x = jnp.where(mask[..., None], x, self.padding_embedding[...][None])
    states = self.final_ln(self.transformer(x))
    return states, states[:, -1]
