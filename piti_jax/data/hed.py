"""HED edge detection (Xie & Tu 2015, BSDS500 weights) in JAX, for PITI's sketches.

The network is the VGG16-style HED of the public PyTorch port: five VGG stages (2, 2, 3, 3, 3 3x3
convolutions with ReLU, 2x2 max-pooling between stages), a 1x1 score convolution per stage,
each score bilinearly upsampled to the input size (half-pixel centres), and a 1x1 convolution over
the five scores followed by a sigmoid. Input: BGR scaled to 0..255 minus the Caffe mean
(104.00698793, 116.66876762, 122.67891434). PITI thresholds the edge probability at 0.6 on the
256x256 image to get a binary sketch.

Weights come from a local file, converted once: the port's PyTorch state dict
(`network-bsds500.pytorch`, keys `moduleVggOne.0.weight` or `netVggOne.0.weight`, ...; needs
PyTorch, the `convert` extra) or an .npz with the same keys.
"""

import functools

import numpy as np

from piti_jax.errors import PitiError

CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
THRESHOLD = 0.6
# stage name -> (Sequential indices of its convolutions, output channels)
STAGES = (("VggOne", (0, 2), 64), ("VggTwo", (1, 3), 128), ("VggThr", (1, 3, 5), 256),
          ("VggFou", (1, 3, 5), 512), ("VggFiv", (1, 3, 5), 512))
SCORES = ("ScoreOne", "ScoreTwo", "ScoreThr", "ScoreFou", "ScoreFiv")


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """State-dict keys (with the `net` prefix) and PyTorch shapes of the HED network."""
  shapes, channels = {}, 3
  for name, indices, width in STAGES:
    for index in indices:
      shapes[f"net{name}.{index}.weight"] = (width, channels, 3, 3)
      shapes[f"net{name}.{index}.bias"] = (width,)
      channels = width
  for score, (_, _, width) in zip(SCORES, STAGES):
    shapes[f"net{score}.weight"] = (1, width, 1, 1)
    shapes[f"net{score}.bias"] = (1,)
  shapes["netCombine.0.weight"] = (1, 5, 1, 1)
  shapes["netCombine.0.bias"] = (1,)
  return shapes


def load_hed_params(path: str) -> dict[str, np.ndarray]:
  """Reads HED weights (PyTorch state dict or .npz) -> {key: array}, kernels as HWIO float32."""
  if path.endswith(".npz"):
    try:
      with np.load(path) as npz:
        raw = {k: npz[k] for k in npz.files}
    except OSError as error:
      raise PitiError(f"cannot read HED weights {path!r} ({error}).") from error
  else:
    from piti_jax.pretrained import load_torch_state_dict  # pylint: disable=import-outside-toplevel

    raw = load_torch_state_dict(path)
  raw = {("net" + k[len("module"):] if k.startswith("module") else k): v for k, v in raw.items()}
  expected = expected_shapes()
  problems = [f"{k}: missing" for k in expected if k not in raw]
  problems += [f"{k}: shape {tuple(raw[k].shape)}, expected {s}" for k, s in expected.items()
               if k in raw and tuple(raw[k].shape) != s]
  if problems:
    raise PitiError(f"{path} is not an HED (BSDS500) state dict: {'; '.join(problems[:6])}. Use the "
                    "network-bsds500.pytorch weights of the PyTorch HED port.")
  params = {}
  for key in expected:
    value = np.asarray(raw[key], np.float32)
    params[key] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value  # OIHW -> HWIO
  return params


@functools.cache
def _forward():
  import jax
  import jax.numpy as jnp

  def conv(x, params, key, padding):
    y = jax.lax.conv_general_dilated(x, params[key + ".weight"], (1, 1), padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    return y + params[key + ".bias"]

  @jax.jit
  def forward(params, images):
    """uint8 RGB (B, H, W, 3) -> edge probability float32 (B, H, W)."""
    batch, height, width, _ = images.shape
    x = images[..., ::-1].astype(jnp.float32) - jnp.asarray(CAFFE_MEAN_BGR, jnp.float32)
    scores = []
    for stage, (name, indices, _) in enumerate(STAGES):
      if stage:
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
      for index in indices:
        x = jax.nn.relu(conv(x, params, f"net{name}.{index}", "SAME"))
      score = conv(x, params, f"net{SCORES[stage]}", "VALID")
      scores.append(jax.image.resize(score, (batch, height, width, 1), method="bilinear", antialias=False))
    fused = conv(jnp.concatenate(scores, axis=-1), params, "netCombine.0", "VALID")
    return jax.nn.sigmoid(fused[..., 0])

  return forward


class HedDetector:
  """Binary sketches from RGB images with HED: 255 where the edge probability exceeds 0.6."""

  def __init__(self, weights_path: str):
    self.params = load_hed_params(weights_path)

  def probability(self, images: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W, 3) or (H, W, 3) -> float32 (B, H, W) or (H, W)."""
    single = images.ndim == 3
    batch = images[None] if single else images
    result = np.asarray(_forward()(self.params, batch))
    return result[0] if single else result

  def __call__(self, image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H, W) sketch."""
    return np.where(self.probability(image) > THRESHOLD, 255, 0).astype(np.uint8)
