"""Concept data as arrays: images, per-concept pixel masks and per-concept image labels.

`make_concept_set` generates a synthetic concept set deterministically from a seed, composited
on real images (digits, MNIST, CIFAR backgrounds): per image, with some probability, a textured
rectangle (`stripes`, `dots`, `checks`), then a solid shape on top (`circle`, `square`,
`triangle`, `bar`; on colour images filled with one of the colours `red`, `green`, `blue`, which
are concepts too), then optionally a planted pattern (a `poison.PatternSpec` patch, concept
`planted`). The background's bright pixels left visible are the concept `ink`. Masks are exact:
a pixel belongs to the concept whose paint is visible there (later paint occludes earlier).

`load_broden` reads a Broden-style folder (Bau et al. 2017; the format NetDissect's `loadseg.py`
reads) behind the same interface:

    label.csv   number,name[,category,frequency,coverage,syns...]   number >= 1 (0 = "no label");
                other columns are ignored
    index.csv   image,split,ih,iw,sh,sw,<category>,...   one row per image (e.g. the categories
                color,object,part,material,scene,texture); a category cell lists, separated by
                ';', mask PNGs (pixel label = R + 256 G, so ids above 255 use the G channel; at the
                segmentation size sh x sw) or integer labels of the whole image (scene, texture)
    images/     the image files and mask PNGs named in index.csv (paths may have folders)

An integer label marks the image as containing the concept (`labels`); NetDissect's
`segmentation_data` paints it over the whole image, which `whole_image_masks=True` does too.
`write_broden` writes concept data in that format (one mask PNG per present concept).
"""

from __future__ import annotations

import csv
import os
import pathlib
from typing import NamedTuple, Sequence

import chex
import jax.numpy as jnp
import numpy as np

from anatomy_jax.poison import PatternSpec, make_patterns
from anatomy_jax.poison.patterns import stamp

SHAPES = ("circle", "square", "triangle", "bar")
COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}
TEXTURES = ("stripes", "dots", "checks")
INK = "ink"
PLANTED = "planted"


class ConceptData(NamedTuple):
    """Images with per-concept masks and labels (concept k = `names[k]`)."""

    images: np.ndarray  # (n, H, W, C) uint8
    masks: np.ndarray  # (n, H, W, K) bool: the concept's pixels
    labels: np.ndarray  # (n, K) bool: the concept is present (a pixel of it, or an image-level label)
    names: tuple[str, ...]

    def index(self, name: str) -> int:
        """The concept axis index of `name`; ValueError naming the concepts when absent."""
        if name not in self.names:
            raise ValueError(f"unknown concept {name!r}; this set has {', '.join(self.names)}")
        return self.names.index(name)

    def take(self, indices: np.ndarray) -> "ConceptData":
        """The images at `indices` (a split)."""
        return ConceptData(self.images[indices], self.masks[indices], self.labels[indices], self.names)


def concept_names(channels: int, planted: bool = True) -> tuple[str, ...]:
    """The synthetic set's concepts for images with `channels` channels (colours on 3 only)."""
    colours = tuple(COLOURS) if channels == 3 else ()
    return SHAPES + colours + TEXTURES + (INK,) + ((PLANTED,) if planted else ())


def shape_mask(kind: str, size: int, row: int, col: int, image_size: tuple[int, int],
               vertical: bool = False) -> np.ndarray:
    """(H, W) bool mask of a shape in the size x size box with top-left (row, col), by pixel centres:
    square = the box; circle = |p - c| <= (size - 1) / 2 + 1/4 (c the box centre: the corners
    stay out); triangle = apex at the top
    row, |x - c_x| <= (y - row + 1) / 2; bar = a max(1, size // 4) thick bar along the box's
    middle, horizontal or `vertical`."""
    if kind not in SHAPES:
        raise ValueError(f"unknown shape {kind!r}; choose one of {', '.join(SHAPES)}")
    h, w = image_size
    if size < 1 or row < 0 or col < 0 or row + size > h or col + size > w:
        raise ValueError(f"a {size}x{size} box at ({row}, {col}) does not fit a {h}x{w} image")
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    inside = (y >= row) & (y < row + size) & (x >= col) & (x < col + size)
    cy, cx = row + (size - 1) / 2, col + (size - 1) / 2
    if kind == "square":
        return inside
    if kind == "circle":
        return inside & ((y - cy) ** 2 + (x - cx) ** 2 <= ((size - 1) / 2 + 0.25) ** 2)
    if kind == "triangle":
        return inside & (np.abs(x - cx) <= (y - row + 1) / 2)
    thick = max(1, size // 4)
    start = (size - thick) // 2
    if vertical:
        return inside & (x >= col + start) & (x < col + start + thick)
    return inside & (y >= row + start) & (y < row + start + thick)


def texture_values(kind: str, image_size: tuple[int, int]) -> np.ndarray:
    """(H, W) float in {0, 1}: the texture over the whole image (the caller crops a rectangle)."""
    h, w = image_size
    y, x = np.mgrid[0:h, 0:w]
    t = max(1, min(h, w) // 16)  # stripe / block width in pixels
    if kind == "stripes":
        return ((y // t) % 2 == 0).astype(np.float32)
    if kind == "dots":
        return ((y % (2 * t + 1) == 0) & (x % (2 * t + 1) == 0)).astype(np.float32)
    if kind == "checks":
        return (((y // (2 * t)) + (x // (2 * t))) % 2 == 0).astype(np.float32)
    raise ValueError(f"unknown texture {kind!r}; choose one of {', '.join(TEXTURES)}")


def _planted_mask(planted: PatternSpec, image_shape: tuple[int, int, int]) -> np.ndarray:
    if not planted.is_patch or planted.location == "random":
        raise ValueError(f"the planted concept needs a fixed-corner patch pattern, got {planted.name}")
    return np.asarray(make_patterns([planted], image_shape).mask[0, ..., 0]) > 0


def make_concept_set(backgrounds: np.ndarray, num_images: int, *, seed: int = 0,
                     planted: PatternSpec | None = None, planted_fraction: float = 0.25,
                     shape_probability: float = 0.7, texture_probability: float = 0.5,
                     ink_threshold: float = 0.5) -> ConceptData:
    """A synthetic concept set of `num_images` images composited on `backgrounds` (uint8 NHWC),
    the same for the same arguments (a numpy Generator seeded with `seed`). See the module doc.

    Shapes are 3/8 to 5/8 of the image side (at least 3 px); texture rectangles 3/8 to 5/8 per
    side. `planted` (a fixed-corner patch `PatternSpec`) is stamped with `poison.stamp` on
    `planted_fraction` of the images. `ink`: background pixels brighter than `ink_threshold`
    (channel mean, [0, 1] scale) that stay visible."""
    backgrounds = np.asarray(backgrounds)
    if backgrounds.ndim != 4 or backgrounds.dtype != np.uint8 or len(backgrounds) == 0:
        raise ValueError(f"backgrounds must be non-empty uint8 (n, H, W, C), got {backgrounds.dtype} "
                         f"{backgrounds.shape}")
    _, h, w, c = backgrounds.shape
    if c not in (1, 3):
        raise ValueError(f"backgrounds must have 1 or 3 channels, got {c}")
    if min(h, w) < 6:
        raise ValueError(f"images must be at least 6x6 for shapes to be recognisable, got {h}x{w}")
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    for name, p in (("planted_fraction", planted_fraction), ("shape_probability", shape_probability),
                    ("texture_probability", texture_probability), ("ink_threshold", ink_threshold)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {p}")
    names = concept_names(c, planted is not None)
    k_of = {n: i for i, n in enumerate(names)}
    rng = np.random.default_rng(seed)
    side = min(h, w)
    lo, hi = max(3, round(3 * side / 8)), max(3, round(5 * side / 8))
    images = np.empty((num_images, h, w, c), np.float32)
    masks = np.zeros((num_images, h, w, len(names)), bool)
    textures = {t: texture_values(t, (h, w)) for t in TEXTURES}
    for i in range(num_images):
        image = backgrounds[rng.integers(len(backgrounds))].astype(np.float32) / 255.0
        painted = np.zeros((h, w), bool)
        if rng.random() < texture_probability:
            kind = TEXTURES[rng.integers(len(TEXTURES))]
            th, tw = rng.integers(lo, hi + 1, size=2)
            r0, c0 = rng.integers(0, h - th + 1), rng.integers(0, w - tw + 1)
            region = np.zeros((h, w), bool)
            region[r0:r0 + th, c0:c0 + tw] = True
            image[region] = textures[kind][region][:, None]
            masks[i, ..., k_of[kind]] = region
            painted |= region
        if rng.random() < shape_probability:
            kind = SHAPES[rng.integers(len(SHAPES))]
            size = int(rng.integers(lo, hi + 1))
            r0, c0 = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
            mask = shape_mask(kind, size, int(r0), int(c0), (h, w), vertical=bool(rng.integers(2)))
            if c == 3:
                colour = list(COLOURS)[rng.integers(len(COLOURS))]
                fill = np.asarray(COLOURS[colour], np.float32)
                masks[i, ..., k_of[colour]] = mask
            else:
                fill = np.full((1,), rng.uniform(0.4, 1.0), np.float32)
            image[mask] = fill
            masks[i, ..., k_of[kind]] = mask
            for t in TEXTURES:  # the shape occludes the texture under it
                masks[i, ..., k_of[t]] &= ~mask
            painted |= mask
        images[i] = image
        bg_ink = image.mean(axis=-1) > ink_threshold
        masks[i, ..., k_of[INK]] = bg_ink & ~painted
    if planted is not None:
        planted.validate((h, w, c))
        region = _planted_mask(planted, (h, w, c))
        chosen = rng.random(num_images) < planted_fraction
        ids = jnp.asarray(np.where(chosen, 0, -1), jnp.int32)
        images = np.asarray(stamp(jnp.asarray(images), ids, jnp.zeros((num_images, 2), jnp.int32),
                                  make_patterns([planted], (h, w, c))))
        masks[chosen] &= ~region[None, ..., None]
        masks[chosen, ..., k_of[PLANTED]] = region
    images_u8 = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    return ConceptData(images_u8, masks, masks.any(axis=(1, 2)), names)


def _read_label_png(path: pathlib.Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1]


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    from PIL import Image

    if array.shape[:2] == tuple(size):
        return array
    resample = Image.NEAREST if nearest else Image.BILINEAR
    if array.dtype != np.uint8:  # integer label maps: resize each label's indicator by nearest neighbour
        return np.asarray(Image.fromarray(array.astype(np.int32)).resize((size[1], size[0]), Image.NEAREST))
    squeeze = array.ndim == 3 and array.shape[-1] == 1
    im = Image.fromarray(array[..., 0] if squeeze else array)
    out = np.asarray(im.resize((size[1], size[0]), resample))
    return out[..., None] if squeeze else out


def load_broden(path: str | os.PathLike, *, size: tuple[int, int] | None = None, split: str | None = None,
                concepts: Sequence[str] | None = None, whole_image_masks: bool = False) -> ConceptData:
    """Concept data from a Broden-style folder (module doc): images resized to `size` (default:
    the first image's size; bilinear), masks to the same size (nearest neighbour). `split` keeps
    the rows of that split; `concepts` keeps those label names (default: every label of label.csv).
    Integer (image-level) labels set `labels` only, or, with `whole_image_masks`, also the mask
    over the whole image (as NetDissect scores scenes and textures). Grayscale images get one
    channel, colour images three."""
    from PIL import Image

    root = pathlib.Path(path)
    for name in ("index.csv", "label.csv"):
        if not (root / name).is_file():
            raise ValueError(f"{root} is not a Broden-style folder: {name} is missing")
    with open(root / "label.csv", newline="") as f:
        label_rows = list(csv.DictReader(f))
    if not label_rows or not {"number", "name"} <= set(label_rows[0]):
        raise ValueError(f"{root / 'label.csv'} needs the columns number,name")
    number_to_name = {int(r["number"]): r["name"] for r in label_rows}
    names = tuple(concepts) if concepts is not None else tuple(number_to_name[k] for k in sorted(number_to_name))
    unknown = [n for n in names if n not in number_to_name.values()]
    if unknown:
        raise ValueError(f"unknown concept(s) {unknown}; label.csv has {', '.join(number_to_name.values())}")
    column_of = {number: names.index(name) for number, name in number_to_name.items() if name in names}
    with open(root / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
    if not rows:
        raise ValueError(f"{root / 'index.csv'} has no images" + (f" in split {split!r}" if split else ""))
    categories = [k for k in rows[0] if k not in ("image", "split", "ih", "iw", "sh", "sw")]
    images, masks, labels = [], [], []
    for row in rows:
        with Image.open(root / "images" / row["image"]) as im:
            image = np.asarray(im.convert("L") if im.mode in ("L", "1", "I", "F") else im.convert("RGB"))
        image = image[..., None] if image.ndim == 2 else image
        if size is None:
            size = image.shape[:2]
        image = _resize(image, size, nearest=False)
        mask = np.zeros((*size, len(names)), bool)
        label = np.zeros(len(names), bool)
        for category in categories:
            for entry in filter(None, (row.get(category) or "").split(";")):
                if entry.strip().isdigit():  # an image-level label
                    k = column_of.get(int(entry))
                    if k is not None:
                        label[k] = True
                        mask[..., k] |= whole_image_masks
                    continue
                pixels = _resize(_read_label_png(root / "images" / entry.strip()), size, nearest=True)
                for number in np.unique(pixels):
                    k = column_of.get(int(number))
                    if k is not None:
                        mask[..., k] |= pixels == number
        images.append(image)
        masks.append(mask)
        labels.append(label | mask.any(axis=(0, 1)))
    channels = {im.shape[-1] for im in images}
    if len(channels) > 1:  # mixed grayscale and colour: promote all to colour
        images = [np.repeat(im, 3, axis=-1) if im.shape[-1] == 1 else im for im in images]
    return ConceptData(np.stack(images).astype(np.uint8), np.stack(masks), np.stack(labels), names)


def write_broden(data: ConceptData, path: str | os.PathLike, *, split: str = "train",
                 category: str = "object") -> pathlib.Path:
    """Writes `data` as a Broden-style folder (module doc) that `load_broden` reads back: label
    numbers 1..K in concept order, one mask PNG per image and present concept (R = the number)."""
    from PIL import Image

    chex.assert_rank(data.masks, 4)
    if len(data.names) > 255:
        raise ValueError(f"write_broden writes at most 255 concepts, got {len(data.names)}")
    root = pathlib.Path(path)
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "label.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "name"])
        writer.writerows([[k + 1, name] for k, name in enumerate(data.names)])
    n, h, w, c = data.images.shape
    with open(root / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "split", "ih", "iw", "sh", "sw", category])
        for i in range(n):
            image_name = f"{i:06d}.png"
            Image.fromarray(data.images[i, ..., 0] if c == 1 else data.images[i]).save(root / "images" / image_name)
            entries = []
            for k in range(len(data.names)):
                if data.masks[i, ..., k].any():
                    rgb = np.zeros((h, w, 3), np.uint8)
                    rgb[data.masks[i, ..., k], 0] = k + 1
                    mask_name = f"{i:06d}_{k + 1}.png"
                    Image.fromarray(rgb).save(root / "images" / mask_name)
                    entries.append(mask_name)
                elif data.labels[i, k]:
                    entries.append(str(k + 1))
            writer.writerow([image_name, split, h, w, h, w, ";".join(entries)])
    return root
