"""EfficientNet in the registry, and the papers' layer groups of every registry model."""

import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.dynamics import depth_order, weight_names
from anatomy_jax.models import MODEL_NAMES, create_model
from anatomy_jax.models.registry import layer_groups, layer_types


def _shapes(name: str, num_classes: int = 10, size: int = 32, **kwargs):
    model = create_model(name, num_classes, **kwargs)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
    return model, variables["params"]


def _count(params) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def _flat(params) -> dict:
    return {"/".join(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.mark.parametrize("name, published", [("efficientnet_b0", 5_288_548), ("efficientnet_b4", 19_341_616)])
def test_efficientnet_parameter_counts_match_the_published_networks(name, published):
    # torchvision / timm ImageNet models (1000 classes, batch-norm scales and shifts included)
    assert _count(_shapes(name, 1000)[1]) == published


def test_efficientnet_b0_layer_types_follow_the_kernels():
    model, params = _shapes("efficientnet_b0")
    names = depth_order(weight_names(params), model.layer_names)
    types = layer_types(model, names)
    assert collections.Counter(types) == {"depthwise": 16, "pointwise_linear": 16, "pointwise": 15,
                                          "squeeze_excite": 32, "stem": 1, "head": 1, "classifier": 1}
    shapes = _flat(params)
    for name, kind in zip(names, types):
        shape = shapes[name].shape
        if kind == "depthwise":
            assert shape[:2] in ((3, 3), (5, 5)) and shape[2] == 1, (name, shape)
        elif kind == "pointwise":  # expansion: 1x1, six times the block's input channels
            assert shape[:2] == (1, 1) and shape[3] == 6 * shape[2], (name, shape)
        elif kind == "pointwise_linear":  # projection: 1x1 from the expanded width down
            assert shape[:2] == (1, 1) and shape[2] > shape[3], (name, shape)
        elif kind == "squeeze_excite":  # 1x1 to or from a quarter of the block's input channels
            assert shape[:2] == (1, 1) and min(shape[2:]) * 4 <= max(shape[2:]), (name, shape)
    assert layer_types(create_model("resnet18"), ["stem/Conv_0/kernel"]) is None


def test_efficientnet_b0_runs_on_32x32_images():
    model = create_model("efficientnet_b0", 10, width=0.25)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    # random parameters of the right shapes (a jitted init compiles every initializer: ~20 s on CPU)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape), jnp.float32), shapes["params"])
    stats = jax.tree_util.tree_map_with_path(
        lambda path, s: jnp.full(s.shape, float(path[-1].key == "var"), jnp.float32), shapes["batch_stats"])
    variables = {"params": params, "batch_stats": stats}
    logits, reps = jax.jit(lambda v: model.apply(v, x, capture=True))(variables)
    assert logits.shape == (2, 10) and np.isfinite(np.asarray(logits)).all()
    assert reps["stem"].shape == (2, 32, 32, 8) and reps["stage7"].shape == (2, 2, 2, 80)  # 32 -> 2 px
    assert reps["head"].shape == (2, 2, 2, 320) and reps["features"].shape == (2, 320)


def test_every_registry_model_assigns_every_layer_a_group():
    allowed = {"stem", "classifier", "head", "early", "middle", "late"} | {f"block{i}" for i in range(1, 8)}
    for name in MODEL_NAMES:
        model, params = _shapes(name)
        names = depth_order(weight_names(params), model.layer_names)
        groups = layer_groups(model, names)
        assert len(groups) == len(names) and set(groups) <= allowed, (name, set(groups) - allowed)
        assert groups[-1] == "classifier", name
        for layer, group in zip(names, groups):
            stage = re.match(r"(?:layer|stage|group)(\d+)/", layer)
            if stage:  # residual stages (shortcut convs included) and EfficientNet stages are blocks
                assert group == f"block{stage.group(1)}", (name, layer, group)
    model, params = _shapes("resnet18")
    names = depth_order(weight_names(params), model.layer_names)
    groups = dict(zip(names, layer_groups(model, names)))
    shortcuts = [n for n in names if "shortcut" in n]
    assert [groups[n] for n in shortcuts] == ["block2", "block3", "block4"]
    assert collections.Counter(groups.values()) == {"stem": 1, "block1": 4, "block2": 5, "block3": 5, "block4": 5,
                                                    "classifier": 1}
    # ResNet-34 (WeightScale's "ResNet-50"): blocks of 3, 4, 6, 3 BasicBlocks, shortcuts in blocks 2-4
    model, params = _shapes("resnet34")
    names = depth_order(weight_names(params), model.layer_names)
    assert collections.Counter(layer_groups(model, names)) == {"stem": 1, "block1": 6, "block2": 9, "block3": 13,
                                                               "block4": 7, "classifier": 1}
    # VGG-19: conv 1-4 early, 5-11 middle, 12-16 late; AlexNet: conv1 / conv2-3 / conv4-5
    model, params = _shapes("vgg19")
    names = depth_order(weight_names(params), model.layer_names)
    assert layer_groups(model, names) == ["early"] * 4 + ["middle"] * 7 + ["late"] * 5 + ["classifier"]
    model, params = _shapes("alexnet")
    names = depth_order(weight_names(params), model.layer_names)
    assert layer_groups(model, names) == ["early", "middle", "middle", "late", "late"] + ["classifier"] * 3
    with pytest.raises(ValueError, match="not a weight"):
        layer_groups(create_model("resnet18"), ["head/Conv_0/kernel"])


def test_weightscale_runs_per_layer_type_on_efficientnet():
    from anatomy_jax.experiment.weight_change import WeightChangeConfig, summarise_model

    model, params = _shapes("efficientnet_b0", width=0.25)
    names = depth_order(weight_names(params), model.layer_names)
    types = layer_types(model, names)
    rng = np.random.default_rng(0)
    runs = [{"layers": names, "rwc": rng.uniform(0.01, 0.1, (len(names), 5)).tolist(), "learning_rate": 0.05,
             "weight_decay": 5e-4, "final_clean_accuracy": 0.5, "stop_epoch": None,
             "rwc_by_mode": {m: rng.uniform(0.01, 0.1, (len(names), 5)).tolist()
                             for m in ("l1_ratio", "elementwise")}} for _ in range(2)]
    entry = summarise_model(WeightChangeConfig(max_k=5), runs, layer_groups(model, names), types, "cifar10")
    by_type = entry["clusters_by_type"]
    assert set(by_type) == {"depthwise", "pointwise", "pointwise_linear", "squeeze_excite"}
    for kind, clusters in by_type.items():
        assert clusters["names"] == [n for n, t in zip(names, types) if t == kind]
        assert clusters["ks"] == [1, 2, 3, 4, 5] and len(clusters["labels"]) == len(clusters["names"])
    assert entry["clusters"]["names"] == names[1:-1] and entry["clusters_pca"]["pca_dim"] == 2
    assert set(entry["group_rwc"]) == {"stem", "head", "classifier"} | {f"block{i}" for i in range(1, 8)}
