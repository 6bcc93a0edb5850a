"""The synthetic concept set is deterministic and its masks are exactly the drawn shapes; the
Broden-style folder round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from anatomy_jax.concepts import (PLANTED, SHAPES, TEXTURES, load_broden, make_concept_set, shape_mask,
                                  write_broden)
from anatomy_jax.poison import PatternSpec


def _backgrounds(channels=1, n=5, size=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels)).astype(np.uint8)


def test_shape_masks_hand_drawn():
    np.testing.assert_array_equal(shape_mask("square", 2, 1, 1, (4, 4)),
                                  np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], bool))
    np.testing.assert_array_equal(shape_mask("circle", 3, 0, 0, (3, 3)),
                                  np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool))  # corners at sqrt 2 > 1.25
    np.testing.assert_array_equal(shape_mask("triangle", 3, 0, 0, (3, 3)),
                                  np.array([[0, 1, 0], [1, 1, 1], [1, 1, 1]], bool))
    np.testing.assert_array_equal(shape_mask("bar", 4, 0, 0, (4, 4), vertical=True)[0], [0, 1, 0, 0])
    with pytest.raises(ValueError, match="does not fit"):
        shape_mask("square", 3, 2, 2, (4, 4))


def test_concept_set_is_deterministic_given_its_seed():
    planted = PatternSpec("checkerboard", 2, "bottom-right")
    a = make_concept_set(_backgrounds(3), 40, seed=7, planted=planted)
    b = make_concept_set(_backgrounds(3), 40, seed=7, planted=planted)
    c = make_concept_set(_backgrounds(3), 40, seed=8, planted=planted)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.images, c.images)
    assert a.names == ("circle", "square", "triangle", "bar", "red", "green", "blue", "stripes", "dots", "checks",
                       "ink", "planted")
    np.testing.assert_array_equal(a.labels, a.masks.any(axis=(1, 2)))


def test_masks_match_the_drawn_shapes_exactly():
    # on black backgrounds without textures or pattern, a shape's pixels are exactly the non-zero ones
    data = make_concept_set(np.zeros((1, 12, 12, 3), np.uint8), 60, seed=1, texture_probability=0.0,
                            shape_probability=1.0)
    drawn = data.images.any(axis=-1)
    shapes = data.masks[..., [data.index(s) for s in SHAPES]]
    colours = data.masks[..., [data.index(c) for c in ("red", "green", "blue")]]
    np.testing.assert_array_equal(shapes.any(-1), drawn)
    np.testing.assert_array_equal(colours.any(-1), drawn)
    assert shapes.sum(-1).max() == 1 and colours.sum(-1).max() == 1  # one shape, one colour per pixel
    red = colours[..., 0]
    assert np.all(data.images[red] == [255, 0, 0])
    assert not data.masks[..., data.index("ink")].any()
    # every concept mask is one of the library's shapes, somewhere
    for i in range(10):
        k = int(np.flatnonzero(shapes[i].any(axis=(0, 1)))[0])
        rows, cols = np.flatnonzero(shapes[i, ..., k].any(1)), np.flatnonzero(shapes[i, ..., k].any(0))
        size = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
        candidates = [shape_mask(SHAPES[k], size, r, c, (12, 12), vertical=v) for r in range(12 - size + 1)
                      for c in range(12 - size + 1) for v in (False, True)]
        assert any(np.array_equal(m, shapes[i, ..., k]) for m in candidates)


def test_occlusion_ink_and_planted_masks_are_exact():
    bg = _backgrounds(1, size=12)
    planted = PatternSpec("solid", 3, "top-left")
    data = make_concept_set(bg, 80, seed=2, planted=planted, planted_fraction=0.5)
    p = data.index(PLANTED)
    carrying = data.labels[:, p]
    assert 20 < carrying.sum() < 60
    assert np.all(data.masks[carrying][:, :3, :3, p]) and not data.masks[carrying][:, 3:, :, p].any()
    assert np.all(data.images[carrying][:, :3, :3] == 255)  # the solid patch, stamped by poison.stamp
    others = np.delete(data.masks, p, axis=-1)
    assert not others[carrying][:, :3, :3].any()  # the pattern occludes everything under it
    assert others.sum(-1).max() <= 1  # every pixel shows at most one paint in grayscale
    textures = data.masks[..., [data.index(t) for t in TEXTURES]].any(-1)
    shapes = data.masks[..., [data.index(s) for s in SHAPES]].any(-1)
    ink = data.masks[..., data.index("ink")]
    assert not (textures & shapes).any() and not (ink & (textures | shapes)).any()
    bright = data.images[..., 0] > 127
    assert np.all(bright[ink])  # ink is visible bright background
    with pytest.raises(ValueError, match="fixed-corner patch"):
        make_concept_set(bg, 4, planted=PatternSpec("checkerboard", 2, "random"))
    with pytest.raises(ValueError, match="uint8"):
        make_concept_set(bg.astype(np.float32), 4)


@pytest.mark.parametrize("channels", [1, 3])
def test_broden_folder_round_trip(tmp_path, channels):
    data = make_concept_set(_backgrounds(channels, size=8), 6, seed=3, planted=PatternSpec("checkerboard", 2))
    write_broden(data, tmp_path / "broden")
    back = load_broden(tmp_path / "broden")
    assert back.names == data.names
    np.testing.assert_array_equal(back.images, data.images)
    np.testing.assert_array_equal(back.masks, data.masks)
    np.testing.assert_array_equal(back.labels, data.labels)
    sub = load_broden(tmp_path / "broden", concepts=["planted", "ink"], size=(16, 16))
    assert sub.images.shape == (6, 16, 16, channels) and sub.masks.shape == (6, 16, 16, 2)
    np.testing.assert_array_equal(sub.masks[:, ::2, ::2], data.masks[..., [data.index("planted"), data.index("ink")]])
    with pytest.raises(ValueError, match="unknown concept"):
        load_broden(tmp_path / "broden", concepts=["zebra"])
    with pytest.raises(ValueError, match="Broden-style"):
        load_broden(tmp_path)
