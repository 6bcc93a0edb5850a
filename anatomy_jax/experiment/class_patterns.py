"""Class-wise patterns of a natural, a backdoored and an adversarially trained model (seed 002).

Trains the three models of one architecture on the same data with the library's study runner
(or loads them from their orbax checkpoints in --models-dir): natural (clean data), backdoored
(a BadNets patch on --frequency of the training images, --correlation of them relabelled to
--target) and PGD-adversarially trained (clean data, L-inf radius --adversarial-eps). For each,
`search_class_patterns` finds one mask and pattern per class on clean training images; the
patterns are scored on held-out test images of the other classes, and Neural Cleanse's anomaly
index of the mask areas says which classes have an unusually small pattern.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Any

import jax
import numpy as np

from anatomy_jax.classwise import (CANVAS, SearchSettings, anomaly_index, flagged_classes, mask_area,
                                   mask_boundary_ratio, mask_centroid, mask_total_variation, mass_near_box,
                                   pattern_success_rate, search_class_patterns)
from anatomy_jax.data import Dataset
from anatomy_jax.experiment.options import DataOptions, DeviceOptions, OutputOptions
from anatomy_jax.experiment.outputs import RESULTS_FILE, default_out_dir, environment, prepare_output_dir
from anatomy_jax.experiment.backdoor_models import (BackdoorModelOptions, train_studies,
                                                    trigger_box)
from anatomy_jax.experiment.pattern_rate import dataset_summary
from anatomy_jax.experiment.study import Study
from anatomy_jax.models.registry import create_model
from anatomy_jax.train.evaluation import to_float
from anatomy_jax.utils.errors import settings_errors
from anatomy_jax.utils.fields import flag
from anatomy_jax.utils.serialize import write_json
from anatomy_jax.utils.statistics import sign_flip_test

MODELS = ("natural", "backdoored", "adversarial")
NEAR_TRIGGER_PIXELS = 2  # mass_near_trigger: the mask's mass within this many pixels of the trigger box


@dataclasses.dataclass(frozen=True)
class ClassPatternsConfig(OutputOptions, DeviceOptions, DataOptions, BackdoorModelOptions):
    """Settings of the class-wise pattern study; defaults suit digits on 2 CPU cores (< 4 min)."""

    adversarial_eps: float | None = flag(None, "L-inf radius of PGD adversarial training on [0, 1] pixels (auto: "
                                               "0.1 on grayscale data, 8/255 on colour; 0 is refused)")
    adversarial_steps: int = flag(7, "PGD steps of adversarial training (step size 2.5 eps / steps)")
    search_steps: int = flag(400, "Adam steps of the pattern search")
    search_batch_size: int = flag(64, "images per search step (each class draws from the other classes)")
    search_learning_rate: float = flag(0.1, "Adam learning rate of the search (Neural Cleanse's)")
    search_images: int = flag(2000, "clean training images the search draws from (0 = all)")
    target_asr: float = flag(0.95, "success rate the lambda schedule aims for (Neural Cleanse: 0.99)")
    lambda_start: float = flag(1.0, "mask-area weight set once the target is first held (grown x1.5 / shrunk "
                                     "x1.84 every 3 checks of 10 steps at / below the target)")
    tv_weight: float = flag(0.0, "weight of the mask's total variation (> 0: simpler shapes)")
    canvas: str = flag("none", f"pattern start: {', '.join(CANVAS)} (init: from an image of the class; near: "
                               "also penalise the distance to it)")
    class_chunk: int = flag(0, "classes searched together (0 = all at once; fewer saves memory)")

    def validate(self) -> None:
        """ValueError naming the first bad value (dataset-dependent checks come with the data)."""
        self.validate_data()
        self.validate_devices()
        self.validate_output()
        self.validate_models()
        if self.adversarial_eps is not None and not self.adversarial_eps > 0:
            raise ValueError(f"--adversarial-eps must be > 0 (the adversarial model is part of the study), got "
                             f"{self.adversarial_eps}")
        for name in ("search_steps", "search_batch_size", "adversarial_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.search_images < 0 or self.class_chunk < 0:
            raise ValueError("search_images and class_chunk must be >= 0")
        self.search_settings().validate()

    def eps(self, data: Dataset) -> float:
        """The adversarial radius: as given, else 0.1 on grayscale and 8/255 on colour images."""
        if self.adversarial_eps is not None:
            return self.adversarial_eps
        return 0.1 if data.image_shape[-1] == 1 else 8 / 255

    def search_settings(self) -> SearchSettings:
        return SearchSettings(steps=self.search_steps, batch_size=self.search_batch_size,
                              learning_rate=self.search_learning_rate, target_asr=self.target_asr,
                              lambda_start=self.lambda_start, tv_weight=self.tv_weight, canvas=self.canvas)

    def training_settings(self, data: Dataset) -> dict[str, Any]:
        """What loaded models must have been trained with (JSON-normalised)."""
        return {**self.model_settings(data), "adversarial_eps": self.eps(data),
                "adversarial_steps": self.adversarial_steps}


def model_studies(config: ClassPatternsConfig, data: Dataset) -> dict[str, Study]:
    """Two studies: natural + backdoored (one trainer, one sweep) and adversarial."""
    with settings_errors():
        adversarial = config.training_config(config.eps(data), config.adversarial_steps)
        return {"standard": Study.prepare([config.run_spec("natural", data, backdoored=False),
                                           config.run_spec("backdoored", data, backdoored=True)],
                                          data, config.sweep_options()),
                "adversarial": Study.prepare([config.run_spec("adversarial", data, adversarial, backdoored=False)],
                                             data, config.sweep_options())}


def train_models(config: ClassPatternsConfig, data: Dataset, models_dir: pathlib.Path,
                 progress: bool = True) -> tuple[dict[str, Any], dict[str, dict]]:
    """({name: variables}, {name: training summary}) of the three models, trained or loaded."""
    return train_studies(model_studies(config, data), config.training_settings(data), models_dir, progress)


def _finite(value: float) -> float | None:
    """JSON has no inf/NaN: a non-finite value (an anomaly index where MAD = 0) is written as null."""
    return float(value) if np.isfinite(value) else None


def class_rows(found, asr: np.ndarray, box: list[int]) -> list[dict[str, Any]]:
    """results.json's per-class entries of one model."""
    masks = np.asarray(found.masks)
    areas = np.asarray(mask_area(masks))
    index = anomaly_index(areas)
    centroids = np.asarray(mask_centroid(masks))
    tv = np.asarray(mask_total_variation(masks))
    ratio = np.asarray(mask_boundary_ratio(masks))
    near = np.asarray(mass_near_box(masks, box, NEAR_TRIGGER_PIXELS))
    return [{"class": int(k), "asr": float(asr[i]), "mask_area": float(areas[i]), "anomaly_index": _finite(index[i]),
             "centroid": [_finite(c) for c in centroids[i]], "mask_tv": float(tv[i]),
             "mask_boundary_ratio": _finite(ratio[i]), "mass_near_trigger": _finite(near[i]),
             "search_asr": float(found.train_asr[i]), "reached_target": bool(found.reached[i]),
             "lambda": float(found.lambdas[i])}
            for i, k in enumerate(found.classes)]


SHAPE_MEASURES = ("mask_tv", "mask_boundary_ratio")


def tv_comparison(natural: list[dict], adversarial: list[dict], min_asr: float = 0.5,
                  permutations: int = 10000, seed: int = 0) -> dict[str, Any]:
    """The paper's "adversarially trained models learn simpler shapes" as paired tests over the
    classes whose patterns reach `min_asr` on held-out images for both models: per shape measure the
    means, the mean difference (adversarial - natural) and a sign-flip permutation p-value (the
    pairs share the class: paired, not independent samples). `mask_tv` grows with the mask's size;
    `mask_boundary_ratio` (TV / sqrt(L1)) does not, so a simpler shape shows there as a negative
    difference whatever the areas."""
    keep = [(n, a) for n, a in zip(natural, adversarial) if n["asr"] >= min_asr and a["asr"] >= min_asr]
    out: dict[str, Any] = {"min_asr": min_asr, "classes": len(keep)}
    for measure in SHAPE_MEASURES:
        pairs = [(n[measure], a[measure]) for n, a in keep if n[measure] is not None and a[measure] is not None]
        entry: dict[str, Any] = {"natural_mean": None, "adversarial_mean": None, "difference": None, "p_value": None}
        if len(pairs) >= 2:
            nat, adv = np.array(pairs).T
            entry.update(natural_mean=float(nat.mean()), adversarial_mean=float(adv.mean()),
                         difference=float((adv - nat).mean()),
                         p_value=sign_flip_test(adv - nat, num_permutations=permutations, seed=seed))
        out[measure] = entry
    return out


def _search_data(config: ClassPatternsConfig, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    n = len(data.train) if not config.search_images else min(config.search_images, len(data.train))
    order = np.random.default_rng(config.seed).permutation(len(data.train))[:n]
    return np.asarray(to_float(data.train.images[order])), np.asarray(data.train.labels[order])


def run_class_patterns(config: ClassPatternsConfig, workdir: str | pathlib.Path | None = None, *,
                       progress: bool = True) -> dict[str, Any]:
    """Trains or loads the three models, searches every class's pattern for each, writes
    results.json, patterns.npz and the figures into `workdir` (default `config.out`)."""
    with settings_errors():
        config.validate()
        data = config.load_data()
        config.check_data(data)
    out = prepare_output_dir(pathlib.Path(workdir or config.out or default_out_dir("class_patterns")),
                             resume=config.resume, overwrite=config.overwrite)
    models_dir = config.models_path(out)
    t0 = time.perf_counter()
    variables, training = train_models(config, data, models_dir, progress)
    train_seconds = time.perf_counter() - t0
    box = trigger_box(config.trigger(data.image_shape), data.image_shape)
    model = create_model(config.model, num_classes=data.num_classes, width=config.width)
    images, labels = _search_data(config, data)
    test_x, test_y = to_float(jax.numpy.asarray(data.test.images)), jax.numpy.asarray(data.test.labels)
    results: dict[str, Any] = {"config": dataclasses.asdict(config), **environment(), "dataset": dataset_summary(data),
                               "trigger": {"target": config.target, "box": box,
                                           "pattern": config.trigger(data.image_shape).name},
                               "adversarial_eps": config.eps(data), "models": {}}
    arrays = {}
    search = functools.partial(search_class_patterns, model.apply, settings=config.search_settings(),
                               class_chunk=config.class_chunk or None)
    t1 = time.perf_counter()
    for k, name in enumerate(MODELS):
        found = search(variables[name], images, labels, data.num_classes, jax.random.fold_in(jax.random.key(config.seed), k))
        asr = np.asarray(pattern_success_rate(model.apply, variables[name], test_x, test_y,
                                              jax.numpy.asarray(found.masks), jax.numpy.asarray(found.patterns)))
        rows = class_rows(found, asr, box)
        results["models"][name] = {**training[name], "classes": rows,
                                   "flagged": flagged_classes([r["mask_area"] for r in rows])}
        arrays[f"{name}_masks"], arrays[f"{name}_patterns"] = found.masks, found.patterns
    results["search_seconds"] = round(time.perf_counter() - t1, 1)
    results["train_seconds"] = round(train_seconds, 1)
    results["backdoor_recovered"] = backdoor_verdict(results["models"]["backdoored"]["classes"], config.target)
    results["tv_comparison"] = tv_comparison(results["models"]["natural"]["classes"],
                                             results["models"]["adversarial"]["classes"])
    np.savez_compressed(out / "patterns.npz", examples=images[_examples(labels, data.num_classes)], **arrays)
    from anatomy_jax.plots.class_patterns import plot_all

    results["figures"] = plot_all(results, np.load(out / "patterns.npz"), out)
    write_json(out / RESULTS_FILE, results)
    return results


def _examples(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """One image index per figure column: the first image not of that column's class."""
    return np.array([int(np.flatnonzero(labels != k)[0]) for k in range(num_classes)])


def backdoor_verdict(classes: list[dict], target: int) -> dict[str, Any]:
    """Whether the search recovered the backdoor: the target's mask is the smallest, its anomaly
    index >= 2 and its held-out ASR >= 0.9, with the numbers."""
    row = classes[target]
    smallest = min(classes, key=lambda r: r["mask_area"])["class"]
    out = {"target_mask_area": row["mask_area"], "smallest_class": smallest, "target_anomaly_index": row["anomaly_index"],
           "target_asr": row["asr"], "target_mass_near_trigger": row["mass_near_trigger"]}
    index = row["anomaly_index"]  # None where MAD = 0: undefined, not counted as recovered
    out["recovered"] = bool(smallest == target and index is not None and index >= 2 and row["asr"] >= 0.9)
    return out


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f}"


def format_summary(results: dict[str, Any]) -> str:
    """What the study found, in a few lines."""
    lines = [f"trigger {results['trigger']['pattern']} at box {results['trigger']['box']}, target "
             f"{results['trigger']['target']}; adversarial eps {results['adversarial_eps']:.3f}"]
    for name, m in results["models"].items():
        areas = ", ".join(f"{r['class']}:{r['mask_area']:.3f}" for r in m["classes"])
        asr = np.mean([r["asr"] for r in m["classes"]])
        lines.append(f"{name:11s} clean acc {m['clean_accuracy']:.3f}, trigger ASR {m['trigger_asr']:.3f}; "
                     f"pattern ASR mean {asr:.2f}; mask areas {areas}; flagged {m['flagged']}")
    v = results["backdoor_recovered"]
    lines.append(f"backdoor {'recovered' if v['recovered'] else 'NOT recovered'}: target area "
                 f"{v['target_mask_area']:.3f} (smallest: class {v['smallest_class']}), anomaly index "
                 f"{_fmt(v['target_anomaly_index'])}, held-out ASR {v['target_asr']:.2f}, mass near trigger "
                 f"{_fmt(v['target_mass_near_trigger'])}")
    tv = results["tv_comparison"]
    for measure in SHAPE_MEASURES:
        m = tv[measure]
        if m["difference"] is None:
            lines.append(f"{measure} natural vs adversarial: fewer than 2 classes reach ASR {tv['min_asr']} on both")
        else:
            lines.append(f"{measure} at matched ASR (>= {tv['min_asr']}, {tv['classes']} classes): natural "
                         f"{m['natural_mean']:.2f}, adversarial {m['adversarial_mean']:.2f}, difference "
                         f"{m['difference']:+.2f} (sign-flip p = {m['p_value']:.3f})")
    return "\n".join(lines)
