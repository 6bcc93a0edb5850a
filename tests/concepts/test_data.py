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


def _write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _label_png(ids):
    """A Broden label PNG: id = R + 256 G."""
    ids = np.asarray(ids)
    return np.stack([ids % 256, ids // 256, np.zeros_like(ids)], axis=-1)


def test_broden_hand_written_folder(tmp_path):
    """A folder written by hand in Broden's own format (NetDissect's loadseg.py): label.csv with its
    extra columns, images and masks in dataset subfolders, masks at half the image size (sh x sw),
    a part id above 255 (R 44 + 256 G 1 = 300; label 44 exists too, so a reader that drops G
    finds a dog), integer scene / texture labels, an empty category cell."""
    root = tmp_path / "broden"
    (root / "images").mkdir(parents=True)
    (root / "label.csv").write_text(
        "number,name,category,frequency,coverage,syns\n"
        "1,red-c,color(1),1,0.25,\n"
        "2,person,object(2);part(1),2,0.3,person;individual\n"
        "44,dog,object(1),1,0.1,\n"
        "300,wheel,part(1),1,0.05,\n"
        "301,street-s,scene(2),2,1.0,\n"
        "302,striped-t,texture(1),1,1.0,stripy\n")
    (root / "index.csv").write_text(
        "image,split,ih,iw,sh,sw,color,object,part,material,scene,texture\n"
        "ade20k/a.png,train,8,8,4,4,ade20k/a_color.png,ade20k/a_object.png,ade20k/a_part.png,,301,302\n"
        "pascal/b.png,val,8,8,4,4,,pascal/b_object.png,,,301,\n")
    rng = np.random.default_rng(0)
    image_a, image_b = rng.integers(0, 256, (2, 8, 8, 3))
    _write_png(root / "images/ade20k/a.png", image_a)
    _write_png(root / "images/pascal/b.png", image_b)
    color = np.zeros((4, 4), int)
    color[0, :] = 1
    object_a = np.zeros((4, 4), int)
    object_a[1:3, 1:3] = 2  # person
    object_a[3, 0] = 44  # dog
    part_a = np.zeros((4, 4), int)
    part_a[2, 2] = 300  # wheel: R 44, G 1
    object_b = np.zeros((4, 4), int)
    object_b[:, 3] = 2
    for name, ids in (("ade20k/a_color.png", color), ("ade20k/a_object.png", object_a),
                      ("ade20k/a_part.png", part_a), ("pascal/b_object.png", object_b)):
        _write_png(root / "images" / name, _label_png(ids))

    data = load_broden(root)
    assert data.names == ("red-c", "person", "dog", "wheel", "street-s", "striped-t")
    np.testing.assert_array_equal(data.images, np.stack([image_a, image_b]))

    def up(mask):  # the 4x4 segmentation at the 8x8 image size (nearest neighbour)
        return np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)

    m = {name: data.masks[..., data.index(name)] for name in data.names}
    np.testing.assert_array_equal(m["red-c"][0], up(color == 1))
    np.testing.assert_array_equal(m["person"][0], up(object_a == 2))
    np.testing.assert_array_equal(m["dog"][0], up(object_a == 44))  # not the wheel's pixels
    np.testing.assert_array_equal(m["wheel"][0], up(part_a == 300))
    np.testing.assert_array_equal(m["person"][1], up(object_b == 2))
    assert not m["wheel"][1].any() and not m["red-c"][1].any()
    # integer labels: the image contains the concept, no pixel mask unless asked
    np.testing.assert_array_equal(data.labels[:, data.index("street-s")], [True, True])
    np.testing.assert_array_equal(data.labels[:, data.index("striped-t")], [True, False])
    assert not m["street-s"].any() and not m["striped-t"].any()
    np.testing.assert_array_equal(data.labels, np.stack([[1, 1, 1, 1, 1, 1], [0, 1, 0, 0, 1, 0]]).astype(bool))
    whole = load_broden(root, whole_image_masks=True)
    assert whole.masks[..., whole.index("street-s")].all()
    np.testing.assert_array_equal(whole.masks[..., whole.index("striped-t")].all(axis=(1, 2)), [True, False])
    np.testing.assert_array_equal(np.delete(whole.masks, [4, 5], -1), np.delete(data.masks, [4, 5], -1))
    # (above, the 4x4 id maps were resized to 8x8, id 300 included); a split, a concept subset, the masks' own size
    val = load_broden(root, split="val", concepts=["person", "wheel"])
    assert val.masks.shape == (1, 8, 8, 2) and val.labels.tolist() == [[True, False]]
    small = load_broden(root, split="train", concepts=["wheel", "dog"], size=(4, 4))
    np.testing.assert_array_equal(small.masks[0, ..., 0], part_a == 300)
    np.testing.assert_array_equal(small.masks[0, ..., 1], object_a == 44)
