"""Net2Vec on a model with a planted pattern (seed 004, linked to seed 000's acquisition).

Trains one small CNN on data where --frequency of the images carry a patch trigger relabelled
to --target (the study runner, orbax checkpoints, resume), and builds the library's synthetic
concept set on the same data's images (shapes, colours, textures, ink and the trigger itself as
the concept `planted`, with exact masks). For every concept and spatial layer of the final
model: the single best filter's and the learned combination's set IoU, the filters needed for
90 % of the combination's IoU, the classification probe's AP and the concept-embedding cosine
similarities. Over training time, a `ConceptTracker` measures at every evaluation step the
`planted` concept's IoU in each layer, set against the step the trigger is acquired (ASR >= 0.5
from then on).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import jax
import numpy as np

from anatomy_jax.concepts import (PLANTED, ConceptData, ConceptTracker, ProbeSettings, analyse_layer,
                                  embedding_similarity, layer_activations, make_concept_set, spatial_layers)
from anatomy_jax.data import Dataset
from anatomy_jax.experiment.backdoor_models import trigger_box
from anatomy_jax.experiment.options import DataOptions, DeviceOptions, OutputOptions, resumable_settings
from anatomy_jax.experiment.outputs import (CHECKPOINT_DIR, RESULTS_FILE, default_out_dir, environment,
                                            prepare_output_dir)
from anatomy_jax.experiment.pattern_rate import auto_patch_size, dataset_summary
from anatomy_jax.experiment.study import Study
from anatomy_jax.models.registry import MODEL_NAMES, create_model
from anatomy_jax.poison import LOCATIONS, PatternSpec, PoisonSpec
from anatomy_jax.poison.metrics import acquisition_step
from anatomy_jax.poison.patterns import PATCH_KINDS
from anatomy_jax.train import RunSpec, TrainConfig
from anatomy_jax.utils.errors import SettingsError, settings_errors
from anatomy_jax.utils.fields import flag
from anatomy_jax.utils.serialize import json_matrix, write_json

FOUND_IOU = 0.5  # the planted pattern counts as found in a layer at this combination IoU
ORDERING_SHARE = 0.7  # the paper's ordering holds when combination >= single in this share of pairs
ORDERING_FLOOR = 0.05  # pairs where both IoUs are below this are ties at ~0, left out of the ordering check


@dataclasses.dataclass(frozen=True)
class Net2VecConfig(OutputOptions, DeviceOptions, DataOptions):
    """Settings of the Net2Vec study; the defaults suit digits on 2 CPU cores (< 4 min)."""

    model: str = flag("cnn", f"architecture: {', '.join(MODEL_NAMES)}")
    width: float = flag(1.0, "channel width multiplier")
    steps: int = flag(600, "training steps")
    batch_size: int = flag(128, "training batch size")
    learning_rate: float = flag(0.05, "SGD learning rate (momentum 0.9, constant)")
    weight_decay: float = flag(5e-4, "weight decay")
    eval_every: int = flag(50, "evaluate, and measure the planted concept over training time, every this many steps")
    seed: int = flag(0, "seed of the model, data order, poison selection and probes")
    pattern: str = flag("checkerboard", f"planted pattern kind (patch kinds: {', '.join(PATCH_KINDS)})")
    patch_size: int | None = flag(None, "side of the planted pattern in pixels (auto: 2 below 16 px, else 3)")
    location: str = flag("bottom-right", f"pattern corner: {', '.join(l for l in LOCATIONS if l != 'random')}")
    target: int = flag(0, "label the pattern-carrying images get")
    frequency: float = flag(0.1, "share of training images that carry the pattern")
    correlation: float = flag(1.0, "share of the pattern-carrying images relabelled to the target")
    concept_images: int = flag(2000, "images of the synthetic concept set (composited on training images)")
    concept_test_fraction: float = flag(0.3, "share of the concept set held out to score the probes")
    concept_seed: int = flag(0, "seed of the concept set")
    planted_fraction: float = flag(0.05, "share of concept images that carry the planted pattern (the 0.5 % "
                                         "quantile presumes a concept covers few of a layer's positions)")
    layers: tuple[str, ...] | None = flag(None, "layers to probe (default: every layer with a spatial map)")
    probe_steps: int = flag(200, "Adam steps of every segmentation probe")
    probe_batch_size: int = flag(64, "images per probe step")
    probe_learning_rate: float = flag(0.05, "Adam learning rate of the probes")
    probe_inputs: str = flag("binary", "segmentation probe inputs: binary [A_k > T_k] (the reference code) or raw "
                                       "(A_k / T_k)")
    quantile: float = flag(0.005, "top quantile of each filter's activations that counts as firing (paper: 0.005)")
    all_images: bool = flag(False, "train and score each concept on every image (default: on the images that "
                                   "contain it, as the paper)")
    track: bool = flag(True, "measure the planted concept at every evaluation step (over training time)")

    def validate(self) -> None:
        self.validate_data()
        self.validate_devices()
        self.validate_output()
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}")
        if self.pattern not in PATCH_KINDS:
            raise ValueError(f"--pattern must be a patch kind ({', '.join(PATCH_KINDS)}), got {self.pattern!r}")
        if self.location not in LOCATIONS or self.location == "random":
            raise ValueError(f"--location must be a fixed corner, got {self.location!r}")
        for name in ("frequency", "correlation", "planted_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {getattr(self, name)}")
        if not 0.0 < self.concept_test_fraction < 1.0:
            raise ValueError(f"concept_test_fraction must lie in (0, 1), got {self.concept_test_fraction}")
        for name in ("steps", "eval_every", "concept_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.concept_images < 20:
            raise ValueError(f"concept_images must be >= 20, got {self.concept_images}")
        self.probe_settings().validate()
        self.training_config().validate()

    def probe_settings(self) -> ProbeSettings:
        return ProbeSettings(steps=self.probe_steps, batch_size=self.probe_batch_size,
                             learning_rate=self.probe_learning_rate, quantile=self.quantile,
                             concept_images=not self.all_images, inputs=self.probe_inputs)

    def training_config(self) -> TrainConfig:
        return TrainConfig(model=self.model, width=self.width, weight_decay=self.weight_decay, augment=False,
                           steps=self.steps, batch_size=self.batch_size, eval_every=self.eval_every,
                           checkpoint_every=self.steps)

    def trigger(self, image_shape: tuple[int, int, int]) -> PatternSpec:
        size = self.patch_size if self.patch_size is not None else auto_patch_size(image_shape)
        return PatternSpec(self.pattern, size, self.location)


def concept_split(config: Net2VecConfig, data: Dataset) -> tuple[ConceptData, ConceptData]:
    """(train, test) halves of the concept set built on the study's training images."""
    concepts = make_concept_set(data.train.images, config.concept_images, seed=config.concept_seed,
                                planted=config.trigger(data.image_shape), planted_fraction=config.planted_fraction)
    order = np.random.default_rng(config.concept_seed).permutation(config.concept_images)
    n_test = max(1, int(round(config.concept_test_fraction * config.concept_images)))
    return concepts.take(np.sort(order[n_test:])), concepts.take(np.sort(order[:n_test]))


def _summarise(spec: RunSpec, history: dict, stats: list, tracked: Any) -> dict[str, Any]:
    asr = [None if v is None else v[0] for v in history["attack_success_rate"]]
    return {"steps": history["steps"], "clean_accuracy": history["clean_accuracy"], "attack_success_rate": asr,
            "diverged": history["diverged"], "concepts": tracked or []}


def over_time(entry: dict, layers: tuple[str, ...], threshold: float = FOUND_IOU) -> tuple[list[dict], dict]:
    """(the over-time series, their summary): per evaluation step the ASR, accuracy and the planted
    concept's IoU per layer; the acquisition step (ASR >= 0.5 from then on) and, per layer, the
    step from which the combination IoU stays >= `threshold`, and its lag after acquisition."""
    tracked = {r["step"]: r["layers"] for r in entry["concepts"]}
    series = [{"step": s, "clean_accuracy": acc, "attack_success_rate": asr,
               "layers": {layer: tracked.get(s, {}).get(layer, {}).get(PLANTED) for layer in layers}}
              for s, acc, asr in zip(entry["steps"], entry["clean_accuracy"], entry["attack_success_rate"])]
    acquired = acquisition_step(entry["attack_success_rate"], entry["steps"])
    summary: dict[str, Any] = {"acquisition_step": acquired, "threshold": threshold, "layers": {}}
    for layer in layers:
        iou = [None if p["layers"][layer] is None else p["layers"][layer]["combination_iou"] for p in series]
        appears = acquisition_step(iou, entry["steps"], threshold) if tracked else None
        summary["layers"][layer] = {"concept_step": appears,
                                    "lag": None if appears is None or acquired is None else appears - acquired}
    return series, summary


def _number(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 4)


def ordering_check(concepts: dict[str, dict[str, dict]], floor: float = ORDERING_FLOOR) -> dict[str, Any]:
    """Share of (concept, layer) pairs where the combination's IoU >= the best single filter's,
    over the pairs where either reaches `floor` (a pair where both are ~0 is a tie that says nothing
    about the ordering and would make the check pass by construction); `uninformative` counts
    those left out."""
    pairs = [(v["combination_iou"], v["single_filter_iou"]) for by_layer in concepts.values()
             for v in by_layer.values() if v["combination_iou"] is not None and v["single_filter_iou"] is not None]
    informative = [(c, s) for c, s in pairs if max(c, s) >= floor]
    holds = sum(c >= s for c, s in informative)
    share = holds / len(informative) if informative else None
    return {"pairs": len(informative), "uninformative": len(pairs) - len(informative), "floor": floor,
            "combination_at_least_single": holds, "share": share,
            "holds": share is not None and share >= ORDERING_SHARE}


def run_net2vec(config: Net2VecConfig, workdir: str | pathlib.Path | None = None, *,
                progress: bool = True) -> dict[str, Any]:
    """Trains (or resumes) the model, runs Net2Vec on its layers, writes results.json and the figures."""
    with settings_errors():
        config.validate()
        data = config.load_data()
        if not 0 <= config.target < data.num_classes:
            raise ValueError(f"--target {config.target} is not a class of {data.name} (0..{data.num_classes - 1})")
        trigger = config.trigger(data.image_shape)
        trigger.validate(data.image_shape)
        model = create_model(config.model, num_classes=data.num_classes, width=config.width)
        variables0 = model.init(jax.random.key(0), np.zeros((1, *data.image_shape), np.float32))
        layers = config.layers or spatial_layers(model, variables0, data.image_shape)
        if not layers:
            raise ValueError(f"{config.model} has no layer with a spatial map on {data.image_shape} images")
        train_set, test_set = concept_split(config, data)
        layer_activations(model, variables0, train_set.images[:1], layers)  # checks the layers
        spec = RunSpec(config.training_config(), config.seed, config.learning_rate,
                       (PoisonSpec(trigger, config.target, config.frequency, config.correlation),))
        study = Study.prepare([spec], data, config.sweep_options())
    out = prepare_output_dir(pathlib.Path(workdir or config.out or default_out_dir("net2vec")),
                             resume=config.resume, overwrite=config.overwrite)
    settings = config.probe_settings()
    key = jax.random.key(config.seed)

    def tracking(trainer, specs, prepared, params, restored):
        return [ConceptTracker(model, train_set, test_set, layers, (PLANTED,), settings, jax.random.fold_in(key, 1),
                               records=restored[0] if restored else None)]

    t0 = time.perf_counter()
    trained = study.run(out / CHECKPOINT_DIR, settings=resumable_settings(config), resume=config.resume,
                        summarise=_summarise, keep_checkpoints=1, return_states=True,
                        tracking=tracking if config.track else None, progress=progress, desc="train")
    entry, state = trained.entries[0], trained.states[0]
    if entry["diverged"]:
        raise SettingsError("the model diverged; lower --learning-rate")
    train_seconds = time.perf_counter() - t0
    variables = {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
    t1 = time.perf_counter()
    acts_train = layer_activations(model, variables, train_set.images, layers)
    acts_test = layer_activations(model, variables, test_set.images, layers)
    names = train_set.names
    concepts: dict[str, dict[str, dict]] = {name: {} for name in names}
    embeddings = {}
    for li, layer in enumerate(layers):
        found = analyse_layer(acts_train[layer], train_set.masks, train_set.labels, acts_test[layer], test_set.masks,
                              test_set.labels, settings, jax.random.fold_in(key, 100 + li))
        for c, name in enumerate(names):
            concepts[name][layer] = {
                "single_filter_iou": _number(found.single_filter_iou[c]),
                "combination_iou": _number(found.combination_iou[c]),
                "filters_for_90": int(found.filters_for_90[c]) if found.filters_for_90[c] > 0 else None,
                "ap": _number(found.ap[c]), "single_filter_ap": _number(found.single_filter_ap[c]),
                "best_filter": int(found.best_filter[c]), "num_filters": int(acts_train[layer].shape[-1])}
        weights = np.nan_to_num(found.weights)
        embeddings[layer] = json_matrix(embedding_similarity(weights))
    probe_seconds = time.perf_counter() - t1
    series, summary = over_time(entry, tuple(layers))
    planted = {layer: concepts[PLANTED][layer]["combination_iou"] for layer in layers}
    best_layer = max(layers, key=lambda l: planted[l] if planted[l] is not None else -1.0)
    results: dict[str, Any] = {
        "config": dataclasses.asdict(config), **environment(), "dataset": dataset_summary(data),
        "trigger": {"pattern": trigger.name, "box": trigger_box(trigger, data.image_shape), "target": config.target},
        "training": {"clean_accuracy": entry["clean_accuracy"][-1], "attack_success_rate":
                     entry["attack_success_rate"][-1], "acquisition_step": summary["acquisition_step"]},
        "concept_set": {"names": list(names), "train_images": len(train_set.images),
                        "test_images": len(test_set.images),
                        "image_share": [round(float(v), 4) for v in test_set.labels.mean(0)],
                        "pixel_share": [round(float(v), 4) for v in test_set.masks.mean((0, 1, 2))]},
        "layers": list(layers), "concepts": concepts,
        "embeddings": {"names": list(names), "cosine": embeddings},
        "over_time": series, "over_time_summary": summary,
        "checks": {"planted_found": bool(planted[best_layer] is not None and planted[best_layer] >= FOUND_IOU),
                   "planted_best_layer": best_layer, "planted_best_iou": planted[best_layer],
                   "found_threshold": FOUND_IOU, "ordering": ordering_check(concepts)},
        "train_seconds": round(train_seconds, 1), "probe_seconds": round(probe_seconds, 1),
        "resumed_from_step": trained.resumed_from["step"] if trained.resumed_from else None,
    }
    from anatomy_jax.plots.concepts import plot_net2vec

    results["figures"] = plot_net2vec(results, out)
    write_json(out / RESULTS_FILE, results)
    return results


def format_summary(results: dict[str, Any]) -> str:
    """The study's findings in a few lines."""
    t = results["training"]
    lines = [f"trigger {results['trigger']['pattern']} -> {results['trigger']['target']}: clean accuracy "
             f"{t['clean_accuracy']:.3f}, ASR {t['attack_success_rate']:.3f}, acquired at step {t['acquisition_step']}"]
    header = "concept     " + "".join(f"{layer:>28s}" for layer in results["layers"])
    lines += [header, " " * 12 + "".join(f"{'single  comb  k90    AP':>28s}" for _ in results["layers"])]
    for name, by_layer in results["concepts"].items():
        cells = []
        for layer in results["layers"]:
            v = by_layer[layer]
            cells.append(f"{_fmt(v['single_filter_iou']):>9s} {_fmt(v['combination_iou']):>5s} "
                         f"{str(v['filters_for_90']):>4s} {_fmt(v['ap']):>5s}")
        lines.append(f"{name:12s}" + "".join(f"{c:>28s}" for c in cells))
    c = results["checks"]
    o = c["ordering"]
    lines.append(f"planted pattern {'FOUND' if c['planted_found'] else 'NOT found'}: best combination IoU "
                 f"{_fmt(c['planted_best_iou'])} at {c['planted_best_layer']} (threshold {c['found_threshold']})")
    lines.append(f"combination >= best single filter in {o['combination_at_least_single']}/{o['pairs']} (concept, "
                 f"layer) pairs with an IoU >= {o['floor']} ({o['uninformative']} ties below it left out)")
    lines.append(f"  share {_fmt(o['share'])}: the paper's ordering {'holds' if o['holds'] else 'does NOT hold'} "
                 f"at >= {ORDERING_SHARE}")
    s = results["over_time_summary"]
    lines.append("over time: acquisition step " + str(s["acquisition_step"]) + "; planted concept (IoU >= "
                 f"{s['threshold']}) from step " + ", ".join(f"{layer}: {v['concept_step']} (lag {v['lag']})"
                                                           for layer, v in s["layers"].items()))
    lines.append(f"train {results['train_seconds']} s, probes {results['probe_seconds']} s")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
