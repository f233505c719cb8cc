"""PatchGAN discriminator for the upsampler's adversarial loss (PITI_SPEC.md section 6).

The pix2pix `NLayerDiscriminator` with the reference's settings: 4x4 convolutions with
zero padding 1; the first conv has no norm; every later conv but the last is followed by
InstanceNorm without affine parameters (eps 1e-5); LeakyReLU slope 0.2 after every conv but
the last. Every conv has a bias. On a 256x256 input the output is a 30x30 map of logits
(70x70 receptive field). Weights start from PyTorch's default conv initialisation (uniform
in +-1/sqrt(fan_in)), as in the reference, which never re-initialises the discriminator.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from piti_jax.models.layers import LEAKY_RELU_SLOPE, Conv2d, draw_initial_values, instance_norm

KERNEL_SIZE = 4
PADDING = 1


def _conv(in_channels: int, out_channels: int, stride: int, dtype) -> Conv2d:
  """4x4 conv with zero padding 1 and a bias; kernel (4, 4, in, out) with fsdp metadata.

  Built without weights (rngs=None); `PatchDiscriminator` draws every weight at once.
  """
  return Conv2d(in_channels, out_channels, KERNEL_SIZE, stride=stride, padding=PADDING, dtype=dtype, rngs=None)


class PatchDiscriminator(nnx.Module):
  """pix2pix NLayer PatchGAN: (B, H, W, in_channels) images -> (B, h, w, 1) logits.

  With n_layers=3 the widths are ndf, 2ndf, 4ndf (stride 2), then 8ndf and 1 (stride 1);
  the width multiplier is capped at 8 as in pix2pix.
  """

  def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, *, rngs: nnx.Rngs,
               dtype=jnp.float32):
    widths = [ndf * min(2**n, 8) for n in range(n_layers + 1)]

    def layers():
      return (_conv(in_channels, widths[0], 2, dtype),
              nnx.List([_conv(widths[n - 1], widths[n], 2 if n < n_layers else 1, dtype)
                        for n in range(1, n_layers + 1)]),
              _conv(widths[-1], 1, 1, dtype))

    # Abstract layers, then every weight from one random generator: creating or drawing each
    # parameter eagerly would compile one XLA program per parameter shape.
    self.first, self.normed, self.last = nnx.eval_shape(layers)
    draw_initial_values([p for conv in (self.first, *self.normed, self.last) for p in (conv.kernel, conv.bias)],
                        rngs.params())

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits for each patch.

    Args:
      x: (B, H, W, in_channels) float images, normally in [-1, 1].
    Returns:
      (B, h, w, 1) logits in the compute dtype; h = H/8 - 2 for n_layers=3 (30 for 256).
    """
    h = nnx.leaky_relu(self.first(x), LEAKY_RELU_SLOPE)
    for conv in self.normed:
      h = conv(h)
      h = nnx.leaky_relu(instance_norm(h).astype(h.dtype), LEAKY_RELU_SLOPE)
    return self.last(h)
