"""Procedural scenes for the built-in `shapes` dataset (NumPy only, no TensorFlow).

A scene is 256x256: a sky above a wavy horizon, one or two ground regions below it, and one to
four shapes painted back to front (a shape lower in the picture is nearer and covers the ones
behind it). Every class has its own colour family and texture, listed in `CLASSES`, so an oracle
can read the layout back from pixels alone (`classify_pixels`). Each scene also yields an
integer label map, a binary sketch (region, object and texture edges), a depth map with a
validity mask, a normal map and an English caption. A scene is a pure function of
(seed, split, index).
"""

import colorsys
import dataclasses
import functools

import numpy as np

SIZE = 256


@dataclasses.dataclass(frozen=True)
class ShapeClass:
  """One class of the `shapes` dataset.

  Attributes:
    id: label id (0-based; colour-coded at VOC colormap index id + 1).
    name: class name used in captions.
    kind: "stuff" (background region) or "thing" (shape).
    colour: colour word used in captions.
    hue: (low, high) hue range in degrees (high may exceed 360 to wrap around red).
    saturation: (low, high) HSV saturation range of the base tone.
    value: (low, high) HSV value range of the base tone.
    texture: texture word; patterned textures alternate the base tone with a darker tone
      (value x 0.6, same hue and saturation).
  """

  id: int
  name: str
  kind: str
  colour: str
  hue: tuple[float, float]
  saturation: tuple[float, float]
  value: tuple[float, float]
  texture: str


CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass(0, "sky", "stuff", "light blue", (200, 212), (0.25, 0.45), (0.85, 1.0), "gradient"),
    ShapeClass(1, "grass", "stuff", "green", (95, 125), (0.55, 0.75), (0.35, 0.6), "noisy"),
    ShapeClass(2, "water", "stuff", "teal", (180, 195), (0.65, 0.85), (0.35, 0.55), "wavy"),
    ShapeClass(3, "sand", "stuff", "beige", (36, 46), (0.3, 0.45), (0.7, 0.85), "speckled"),
    ShapeClass(4, "circle", "thing", "red", (352, 368), (0.75, 0.95), (0.75, 0.95), "striped"),
    ShapeClass(5, "square", "thing", "blue", (228, 242), (0.75, 0.95), (0.7, 0.95), "checkered"),
    ShapeClass(6, "triangle", "thing", "yellow", (52, 60), (0.8, 0.95), (0.85, 1.0), "dotted"),
    ShapeClass(7, "diamond", "thing", "purple", (272, 288), (0.6, 0.8), (0.6, 0.85), "plain"),
    ShapeClass(8, "star", "thing", "orange", (20, 30), (0.85, 1.0), (0.9, 1.0), "ringed"),
    ShapeClass(9, "cross", "thing", "pink", (312, 325), (0.6, 0.85), (0.75, 0.95), "zigzag"),
)
NUM_CLASSES = len(CLASSES)
STUFF_IDS = tuple(c.id for c in CLASSES if c.kind == "stuff")
GROUND_IDS = (1, 2, 3)
THING_IDS = tuple(c.id for c in CLASSES if c.kind == "thing")
DARK_TONE = 0.6
SKY_DEPTH = 300.0


@dataclasses.dataclass(frozen=True)
class Scene:
  """One generated scene (all arrays 256x256).

  Attributes:
    image: uint8 (256, 256, 3) RGB.
    labels: uint8 (256, 256) class ids (see `CLASSES`).
    sketch: uint8 (256, 256), 255 on region, object and texture edges, 0 elsewhere.
    depth: float32 (256, 256) depth in scene units (the sky is SKY_DEPTH and invalid).
    depth_valid: bool (256, 256), False on the sky.
    normals: float32 (256, 256, 3) unit normals (x right, y up, z towards the camera); zero on the sky.
    caption: English description of the scene.
  """

  image: np.ndarray
  labels: np.ndarray
  sketch: np.ndarray
  depth: np.ndarray
  depth_valid: np.ndarray
  normals: np.ndarray
  caption: str


@functools.cache
def _grid() -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates: float32 (256, 256) rows and columns."""
  rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
  return rows, cols


def _random_rgb(shape_class: ShapeClass, rng: np.random.Generator) -> np.ndarray:
  """A base tone from the class's colour family: float32 (3,) in [0, 1]."""
  hue = (rng.uniform(*shape_class.hue) % 360.0) / 360.0
  return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(*shape_class.saturation), rng.uniform(*shape_class.value)),
                  np.float32)


def _ground_depth(rows: np.ndarray, horizon: float) -> np.ndarray:
  """Depth of a ground-plane pixel at image row `rows` (perspective: nearer towards the bottom)."""
  return np.minimum(SKY_DEPTH * 0.9, 2.0 + 900.0 / np.maximum(rows - horizon + 6.0, 1.0))


@functools.cache
def _sky_shade() -> np.ndarray:
  """Vertical brightness gradient of the sky: float32 (256, 256)."""
  rows, _ = _grid()
  return 1.0 - 0.12 * rows / SIZE


@functools.cache
def _water_shade() -> np.ndarray:
  """Horizontal wave pattern of water: float32 (256, 256)."""
  rows, cols = _grid()
  return (1.0 + 0.12 * np.sin(rows * 0.9 + 2.0 * np.sin(cols / 17.0))).astype(np.float32)


def _background(rng: np.random.Generator):
  """Sky and ground regions: labels, base colours, texture pattern ids, depth and normals."""
  rows, cols = _grid()
  horizon_level = rng.uniform(70.0, 150.0)
  wave = rng.uniform(0.0, 10.0) * np.sin(2 * np.pi * rng.integers(1, 3) * cols[0] / SIZE + rng.uniform(0, 2 * np.pi))
  horizon = (horizon_level + wave).astype(np.float32)  # (256,) per column
  sky = rows < horizon[None, :]
  grounds = rng.choice(GROUND_IDS, size=2, replace=False)
  labels = np.where(sky, 0, grounds[0]).astype(np.uint8)
  if rng.random() < 0.4:
    split_column = rng.uniform(60.0, 196.0) + rng.uniform(-0.8, 0.8) * (rows - horizon_level)
    labels = np.where(~sky & (cols > split_column), grounds[1], labels).astype(np.uint8)
  present = np.flatnonzero(np.bincount(labels.ravel(), minlength=NUM_CLASSES))
  colours = np.zeros((NUM_CLASSES, 3), np.float32)
  for class_id in present:
    colours[class_id] = _random_rgb(CLASSES[class_id], rng)
  shade = np.ones((SIZE, SIZE), np.float32)
  if 0 in present:
    shade = np.where(sky, _sky_shade(), shade)
  if 1 in present or 3 in present:
    noise = rng.standard_normal((SIZE, SIZE), dtype=np.float32)
    shade = np.where(labels == 1, 1.0 + 0.12 * noise, shade)
    shade = np.where((labels == 3) & (noise > 1.6), 0.75, shade)  # sparse dark speckles on sand
  if 2 in present:
    shade = np.where(labels == 2, _water_shade(), shade)
  image = colours[labels] * shade[..., None]
  pattern = np.zeros((SIZE, SIZE), np.int32)
  depth = np.where(sky, SKY_DEPTH, _ground_depth(rows, horizon[None, :])).astype(np.float32)
  ground_normal = np.array([0.0, 0.95, 0.31], np.float32)
  ground_normal /= np.linalg.norm(ground_normal)
  normals = np.where(sky[..., None], 0.0, ground_normal).astype(np.float32)
  return labels, image, pattern, depth, normals, horizon_level


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
  """Inside-test in object coordinates (u right, v down, origin at the centre)."""
  if name == "circle":
    return u * u + v * v <= radius * radius
  if name == "square":
    return np.maximum(np.abs(u), np.abs(v)) <= radius * 0.85
  if name == "triangle":  # upward-pointing equilateral-ish triangle
    return (v <= radius * 0.6) & (v >= -radius + 2.0 * np.abs(u) * 0.95)
  if name == "diamond":
    return np.abs(u) / (radius * 0.65) + np.abs(v) / radius <= 1.0
  if name == "star":
    angle = np.arctan2(v, u)
    outline = radius * (0.62 + 0.38 * np.cos(5.0 * (angle + np.pi / 2.0)))
    return np.hypot(u, v) <= np.maximum(outline, radius * 0.45)
  if name == "cross":
    arm = radius * 0.33
    return ((np.abs(u) <= arm) & (np.abs(v) <= radius)) | ((np.abs(v) <= arm) & (np.abs(u) <= radius))
  raise ValueError(name)


def _texture(texture: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
  """Texture pattern index (int32, 0 = base tone, 1 = dark tone) in object coordinates."""
  if texture == "striped":
    return (np.floor((u + v) / period) % 2).astype(np.int32)
  if texture == "checkered":
    return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.int32)
  if texture == "dotted":
    du = (u % period) - period / 2.0
    dv = (v % period) - period / 2.0
    return (du * du + dv * dv <= (0.3 * period) ** 2).astype(np.int32)
  if texture == "ringed":
    return (np.floor(np.hypot(u, v) / period) % 2).astype(np.int32)
  if texture == "zigzag":
    return (np.floor((v + 0.5 * period * np.abs((u / period) % 2.0 - 1.0) * 2.0) / period) % 2).astype(np.int32)
  return np.zeros(u.shape, np.int32)  # plain


@dataclasses.dataclass(frozen=True)
class _Placed:
  class_id: int
  centre: tuple[float, float]  # (row, col)
  radius: float
  visible: int


def _size_word(radius: float) -> str:
  if radius < 24.0:
    return "small "
  if radius > 44.0:
    return "large "
  return ""


def _noun_phrase(placed: _Placed) -> str:
  shape_class = CLASSES[placed.class_id]
  words = f"{_size_word(placed.radius)}{shape_class.colour} {shape_class.texture} {shape_class.name}"
  article = "an" if words[0] in "aeiou" else "a"
  return f"{article} {words}"


def _relation(first: _Placed, second: _Placed) -> str:
  d_row = second.centre[0] - first.centre[0]
  d_col = second.centre[1] - first.centre[1]
  if abs(d_row) >= abs(d_col):
    return "above" if d_row > 0 else "below"
  return "to the left of" if d_col > 0 else "to the right of"


def _caption(placed: list[_Placed], labels: np.ndarray) -> str:
  """'a red striped circle above a small blue checkered square on grass'."""
  shown = sorted((p for p in placed if p.visible > 0), key=lambda p: -p.visible)[:3]
  text = _noun_phrase(shown[0])
  if len(shown) > 1:
    text += f" {_relation(shown[0], shown[1])} {_noun_phrase(shown[1])}"
  if len(shown) > 2:
    text += f" and {_noun_phrase(shown[2])}"
  ground_ids = [i for i in GROUND_IDS if np.any(labels == i)]
  ground_ids.sort(key=lambda i: -int(np.count_nonzero(labels == i)))
  grounds = " and ".join(CLASSES[i].name for i in ground_ids)
  return f"{text} on {grounds}" if grounds else text


def _edges(labels: np.ndarray, pattern: np.ndarray) -> np.ndarray:
  """255 where the label or the texture pattern changes to the right or below, else 0."""
  key = labels.astype(np.int32) * 4 + pattern
  edges = np.zeros(key.shape, bool)
  edges[:, :-1] |= key[:, :-1] != key[:, 1:]
  edges[:-1, :] |= key[:-1, :] != key[1:, :]
  return np.where(edges, 255, 0).astype(np.uint8)


def generate_scene(seed: int, split: int, index: int) -> Scene:
  """Generates scene `index` of split `split` (0 train, 1 validation) for `seed`, deterministically."""
  rng = np.random.default_rng([seed, split, index])
  labels, image, pattern, depth, normals, horizon = _background(rng)
  rows, cols = _grid()
  count = int(rng.integers(1, 5))
  objects = []
  for _ in range(count):
    radius = float(rng.uniform(14.0, 56.0))
    low, high = radius * 0.6, SIZE - radius * 0.6
    centre = (float(rng.uniform(low, high)), float(rng.uniform(low, high)))
    objects.append((centre, radius, int(rng.choice(THING_IDS))))
  objects.sort(key=lambda o: o[0][0] + o[1])  # far (higher base) first, painted back to front
  owner = np.full((SIZE, SIZE), -1, np.int32)
  for number, (centre, radius, class_id) in enumerate(objects):
    shape_class = CLASSES[class_id]
    top, bottom = max(int(centre[0] - radius) - 1, 0), min(int(centre[0] + radius) + 2, SIZE)
    left, right = max(int(centre[1] - radius) - 1, 0), min(int(centre[1] + radius) + 2, SIZE)
    window = (slice(top, bottom), slice(left, right))
    angle = rng.uniform(-0.35, 0.35) if shape_class.name in ("square", "cross", "star") else 0.0
    v0, u0 = rows[window] - centre[0], cols[window] - centre[1]
    u = np.cos(angle) * u0 + np.sin(angle) * v0
    v = -np.sin(angle) * u0 + np.cos(angle) * v0
    inside = _shape_mask(shape_class.name, u, v, radius)
    tone = _texture(shape_class.texture, u, v, period=float(rng.uniform(7.0, 13.0)))
    base = _random_rgb(shape_class, rng)
    # Depth: the object stands on the ground at its base row; a circle bulges like a sphere.
    base_row = max(centre[0] + radius, horizon + 8.0)
    object_depth = float(_ground_depth(np.float32(base_row), horizon))
    if shape_class.name == "circle":
      nx, ny = u0 / radius, -v0 / radius
      nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
      shade = 0.7 + 0.3 * nz
      local_depth = object_depth - 0.4 * radius * nz * object_depth / 100.0
    else:
      tilt = rng.uniform(-0.25, 0.25, size=2)
      nx, ny = np.full(u.shape, tilt[0], np.float32), np.full(u.shape, tilt[1], np.float32)
      nz = np.sqrt(1.0 - nx * nx - ny * ny)
      shade = np.full(u.shape, 0.9 + 0.1 * float(nz.flat[0]), np.float32)
      local_depth = np.full(u.shape, object_depth, np.float32)
    colour = np.where(tone[..., None] == 1, base * DARK_TONE, base) * shade[..., None]
    image[window] = np.where(inside[..., None], colour, image[window])
    labels[window] = np.where(inside, class_id, labels[window])
    pattern[window] = np.where(inside, tone + 2, pattern[window])
    owner[window] = np.where(inside, number, owner[window])
    depth[window] = np.where(inside, local_depth, depth[window])
    normals[window] = np.where(inside[..., None], np.stack([nx, ny, nz], axis=-1), normals[window])
  visible = np.bincount(owner[owner >= 0], minlength=len(objects))
  placed = [_Placed(class_id, centre, radius, int(visible[n])) for n, (centre, radius, class_id) in enumerate(objects)]
  image_uint8 = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
  return Scene(image=image_uint8, labels=labels, sketch=_edges(labels, pattern), depth=depth.astype(np.float32),
               depth_valid=labels != 0, normals=normals.astype(np.float32), caption=_caption(placed, labels))


def _class_hsv_centres() -> np.ndarray:
  """float32 (NUM_CLASSES, 2): hue centre (degrees) and saturation centre per class."""
  return np.array([[np.mean(c.hue) % 360.0, np.mean(c.saturation)] for c in CLASSES], np.float32)


def classify_pixels(image: np.ndarray) -> np.ndarray:
  """Reads a label map back from pixels by colour family (an oracle for layout fidelity).

  Each pixel goes to the class whose (hue, saturation) family centre is nearest, hue distance
  measured on the circle in units of 30 degrees and saturation in units of 0.2; value is ignored
  because textures vary it. Pixels too dark to have a reliable hue (value < 0.15) get 255.

  Args:
    image: uint8 (H, W, 3) RGB.

  Returns:
    uint8 (H, W) class ids or 255.
  """
  rgb = image.astype(np.float32) / 255.0
  high, low = rgb.max(axis=-1), rgb.min(axis=-1)
  chroma = high - low
  saturation = np.where(high > 0, chroma / np.maximum(high, 1e-6), 0.0)
  safe = np.maximum(chroma, 1e-6)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  hue = np.where(high == r, ((g - b) / safe) % 6.0, np.where(high == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
  hue = hue * 60.0
  centres = _class_hsv_centres()
  hue_gap = np.abs(hue[..., None] - centres[:, 0])
  hue_gap = np.minimum(hue_gap, 360.0 - hue_gap) / 30.0
  saturation_gap = (saturation[..., None] - centres[:, 1]) / 0.2
  labels = np.argmin(hue_gap * hue_gap + saturation_gap * saturation_gap, axis=-1).astype(np.uint8)
  return np.where(high < 0.15, 255, labels).astype(np.uint8)
