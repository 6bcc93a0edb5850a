"""Attribution of a backdoored model's decisions (seed 004): do the maps point at the trigger?

Trains (or loads) the natural and the backdoored model of the class-patterns study (the same
flags, meanings and defaults, the same study runner and checkpoints), then explains the target
class on stamped non-target test images that the backdoored model calls the target, with every
method, and the true class on clean test images. The pointing game counts a hit when a map's
maximum lies in the trigger box; deletion / insertion curves (Petsiuk et al. 2018) score the maps
on stamped and on clean images.

Three controls: the natural model on the same stamped images, explaining its own predicted class
and explaining the target (the matched class: only the model changes); if its maps also hit the
trigger box, the pointing comes from the stamp's contrast, not from the backdoor (chance is the
box's share of the pixels). And the model-randomisation check (Adebayo et al. 2018): every method's
maps of the backdoored model with re-initialised weights against the trained model's, Spearman over
the pixels where either map is non-zero, read against a noise floor: the trained model's maps
computed with the same other random key as the re-initialised ones (1 for deterministic methods).
A method passes when its randomised correlation is well below its own floor.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.attribution import (JITTERS, PERTURBATIONS, REFERENCES, REWARDS, TIE_BREAKS, VARIANTS, curve_auc,
                                     deletion_curve, extremal_perturbation, grad_cam, gradient, gradient_x_input,
                                     insertion_curve, integrated_gradients, mass_in_box, meaningful_perturbation,
                                     pointing_game, rank_correlation, rise, smoothgrad, spatial_layers)
from anatomy_jax.attribution.meaningful import GAMES
from anatomy_jax.data import Dataset
from anatomy_jax.experiment.backdoor_models import BackdoorModelOptions, train_studies, trigger_box
from anatomy_jax.experiment.options import DataOptions, DeviceOptions, OutputOptions
from anatomy_jax.experiment.outputs import RESULTS_FILE, default_out_dir, environment, prepare_output_dir
from anatomy_jax.experiment.pattern_rate import dataset_summary
from anatomy_jax.experiment.study import Study
from anatomy_jax.models.registry import create_model
from anatomy_jax.poison import make_patterns, stamp_everywhere
from anatomy_jax.train.evaluation import to_float
from anatomy_jax.utils.errors import SettingsError, settings_errors
from anatomy_jax.utils.fields import flag
from anatomy_jax.utils.serialize import write_json

METHODS = ("extremal", "meaningful", "gradient", "gradient_x_input", "integrated_gradients", "smoothgrad",
           "grad_cam", "rise")
DEFAULT_AREAS = (0.05, 0.1, 0.2)


@dataclasses.dataclass(frozen=True)
class AttributionConfig(OutputOptions, DeviceOptions, DataOptions, BackdoorModelOptions):
    """Settings of the attribution study; the model and trigger flags are the backdoored-models
    options the class-patterns study uses. Defaults suit digits on 2 CPU cores (< 4 min)."""

    images: int = flag(64, "stamped non-target test images explained (those the backdoored model calls the target)")
    clean_images: int = flag(32, "clean test images explained (their true class, correctly classified)")
    areas: tuple[float, ...] = flag(DEFAULT_AREAS, "extremal-perturbation areas (shares of the image)")
    ep_iterations: int = flag(800, "extremal-perturbation iterations (TorchRay: 800)")
    ep_variant: str = flag("preserve", f"extremal variant: {', '.join(VARIANTS)}")
    ep_reward: str = flag("simple", f"extremal reward: {', '.join(REWARDS)}")
    ep_perturbation: str = flag("blur", f"extremal perturbation: {', '.join(PERTURBATIONS)}")
    ep_jitter: str = flag("auto", f"extremal jitter: {', '.join(JITTERS)}, or auto (flip where the dataset trains "
                                  "with flips, else none: a flipped trigger is no trigger)")
    ep_tie_break: str = flag("random", f"extremal ranking-regulariser order of equal mask values: "
                                       f"{', '.join(TIE_BREAKS)} (index: row-major, drifts to the bottom-right)")
    mp_iterations: int = flag(300, "meaningful-perturbation Adam iterations")
    mp_game: str = flag("delete", f"meaningful-perturbation game: {', '.join(GAMES)}")
    mp_reference: str = flag("blur", f"meaningful-perturbation reference: {', '.join(REFERENCES)}")
    ig_steps: int = flag(25, "integrated-gradients steps")
    smoothgrad_samples: int = flag(25, "SmoothGrad noisy samples")
    rise_masks: int = flag(2000, "RISE random masks (a multiple of 250)")
    grad_cam_layer: str | None = flag(None, "Grad-CAM layer (auto: the deepest spatial stage)")
    tolerance: int = flag(0, "pointing-game tolerance in px (TorchRay: 15 at 224 px, i.e. round(15 H / 224))")
    curve_steps: int = flag(16, "deletion / insertion curve steps")
    controls: bool = flag(True, "run the controls: the natural model's maps of its own class and of the target on the "
                                "stamped images, and the maps of the backdoored model with re-initialised weights "
                                "(Adebayo et al.) against a noise floor")

    def validate(self) -> None:
        """ValueError naming the first bad value (dataset-dependent checks come with the data)."""
        self.validate_data()
        self.validate_devices()
        self.validate_output()
        self.validate_models()
        for name in ("images", "clean_images", "ep_iterations", "mp_iterations", "smoothgrad_samples", "curve_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.ig_steps < 2:
            raise ValueError(f"--ig-steps must be >= 2, got {self.ig_steps}")
        if self.rise_masks < 250 or self.rise_masks % 250:
            raise ValueError(f"--rise-masks must be a positive multiple of 250, got {self.rise_masks}")
        if not self.areas or not all(0 < a < 1 for a in self.areas):
            raise ValueError(f"--areas must lie in (0, 1), got {','.join(map(str, self.areas))}")
        if self.tolerance < 0:
            raise ValueError(f"--tolerance must be >= 0, got {self.tolerance}")
        for name, allowed in (("ep_variant", VARIANTS), ("ep_reward", REWARDS), ("ep_perturbation", PERTURBATIONS),
                              ("ep_tie_break", TIE_BREAKS), ("ep_jitter", (*JITTERS, "auto")), ("mp_game", GAMES),
                              ("mp_reference", REFERENCES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: choose one of "
                                 f"{', '.join(allowed)}")


def train_natural_and_backdoored(config: AttributionConfig, data: Dataset, models_dir: pathlib.Path,
                                 progress: bool = True) -> tuple[dict[str, Any], dict[str, dict]]:
    """({natural, backdoored: variables}, {name: clean_accuracy, trigger_asr}): the class-patterns
    study's `standard` group (one sweep of both), trained or loaded from `models_dir`."""
    with settings_errors():
        study = Study.prepare([config.run_spec("natural", data, backdoored=False),
                               config.run_spec("backdoored", data, backdoored=True)], data, config.sweep_options())
    return train_studies({"standard": study}, config.model_settings(data), models_dir, progress)


def explained_images(apply_fn: Callable, variables, data: Dataset, config: AttributionConfig
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(stamped images, their true labels, clean images, their labels): stamped non-target test
    images the model calls the target, and correctly classified clean test images."""
    patterns = make_patterns([config.trigger(data.image_shape)], data.image_shape)
    x = to_float(jnp.asarray(data.test.images))
    y = np.asarray(data.test.labels)
    stamped = stamp_everywhere(x, patterns)
    pred_s = np.asarray(apply_fn(variables, stamped).argmax(-1))
    pred_c = np.asarray(apply_fn(variables, x).argmax(-1))
    s = np.flatnonzero((y != config.target) & (pred_s == config.target))[:config.images]
    c = np.flatnonzero(pred_c == y)[:config.clean_images]
    if len(s) == 0:
        raise SettingsError("the backdoored model calls no stamped test image the target: nothing to explain")
    return np.asarray(stamped[s]), y[s], np.asarray(x[c]), y[c]


def all_maps(apply_fn: Callable, variables, images: jax.Array, targets: jax.Array, key: jax.Array,
             config: AttributionConfig, layer: str, flips: bool = False
             ) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, float]]:
    """({method: (n, H, W) map}, extras (extremal masks and scores), {method: seconds})."""
    keys = jax.random.split(key, 4)
    maps, seconds, extra = {}, {}, {}
    jitter = config.ep_jitter if config.ep_jitter != "auto" else ("flip" if flips else "none")

    def timed(name, fn):
        t = time.perf_counter()
        maps[name] = np.asarray(jax.block_until_ready(fn()))
        seconds[name] = round(time.perf_counter() - t, 2)

    def extremal():
        ep = extremal_perturbation(apply_fn, variables, images, targets, config.areas, keys[0],
                                   variant=config.ep_variant, reward=config.ep_reward,
                                   perturbation=config.ep_perturbation, max_iter=config.ep_iterations, jitter=jitter,
                                   tie_break=config.ep_tie_break)
        extra["masks"], extra["scores"] = np.asarray(ep.masks), np.asarray(ep.scores)
        return ep.masks.sum(axis=1)

    timed("extremal", extremal)
    timed("meaningful", lambda: meaningful_perturbation(apply_fn, variables, images, targets, keys[1],
                                                        game=config.mp_game, reference=config.mp_reference,
                                                        iters=config.mp_iterations).saliency)
    timed("gradient", lambda: gradient(apply_fn, variables, images, targets))
    timed("gradient_x_input", lambda: gradient_x_input(apply_fn, variables, images, targets))
    timed("integrated_gradients", lambda: integrated_gradients(apply_fn, variables, images, targets,
                                                                steps=config.ig_steps, reduce="sum_abs"))
    timed("smoothgrad", lambda: smoothgrad(apply_fn, variables, images, targets, keys[2],
                                            samples=config.smoothgrad_samples))
    timed("grad_cam", lambda: grad_cam(apply_fn, variables, images, targets, layer))
    timed("rise", lambda: rise(apply_fn, variables, images, targets, keys[3], num_masks=config.rise_masks))
    return maps, extra, seconds


def reinitialised(model, variables, key: jax.Array, image_shape: tuple[int, ...]) -> dict[str, Any]:
    """Fresh initial weights (and batch statistics) of `model` in the collections of `variables`."""
    fresh = model.init(key, jnp.zeros((1, *image_shape)))
    return {name: fresh[name] for name in variables}


RANDOMISATION_KEY = 3  # fold_in(key, 3): the re-initialised model's maps and the noise floor's


def randomisation_spearman(trained: dict[str, np.ndarray], other: dict[str, np.ndarray],
                           min_share: float = 0.5) -> dict[str, dict]:
    """Per method: Spearman correlation of the trained model's map of each image with `other`'s (the
    re-initialised model's, or the trained model's with another key: the noise floor) over the pixels
    where either map is non-zero: mean, sd, the number of images where it is defined (`images`) and
    where it is not (`constant`: a map is constant there, e.g. an all-zero Grad-CAM). The mean and sd
    are null when it is defined on fewer than `min_share` of the images: a mean of a few images is
    not the method's result."""
    out = {}
    for name, a in trained.items():
        b = other[name]
        rho = rank_correlation(a, b, where=(a != 0) | (b != 0))
        ok = rho[np.isfinite(rho)]
        enough = ok.size > 0 and ok.size >= min_share * len(rho)
        out[name] = {"mean": float(ok.mean()) if enough else None, "sd": float(ok.std()) if enough else None,
                     "images": int(ok.size), "constant": int(len(rho) - ok.size)}
    return out


def run_controls(model, variables: dict[str, Any], stamped: jax.Array, true_labels: np.ndarray,
                 maps: dict[str, np.ndarray], key: jax.Array, config: AttributionConfig, layer: str, flips: bool,
                 box: list[int]) -> tuple[dict[str, Any], dict[str, dict], dict[str, np.ndarray]]:
    """(control, {spearman, floor}, maps): every method on the stamped images for the natural model
    (its own predicted class, and the target), for the backdoored model with re-initialised weights
    (the target; the same settings as `maps`, the trained backdoored model's, which used `key`, but
    the key fold_in(key, 3), so that random tie orders, noise and masks are not shared), and for the
    trained backdoored model with that same other key (the noise floor); pointing games, chance, and
    the Spearman correlations (`randomisation_spearman`) of trained vs re-initialised and of trained
    vs trained with the other key."""
    net = variables["backdoored"]
    natural = variables["natural"]
    targets = jnp.full(len(stamped), config.target, jnp.int32)
    natural_pred = jnp.asarray(model.apply(natural, stamped).argmax(-1), jnp.int32)
    natural_maps, _, _ = all_maps(model.apply, natural, stamped, natural_pred, key, config, layer, flips)
    natural_target_maps, _, _ = all_maps(model.apply, natural, stamped, targets, key, config, layer, flips)
    other_key = jax.random.fold_in(key, RANDOMISATION_KEY)
    random_net = reinitialised(model, net, jax.random.fold_in(key, 2), stamped.shape[1:])
    random_maps, _, _ = all_maps(model.apply, random_net, stamped, targets, other_key, config, layer, flips)
    floor_maps, _, _ = all_maps(model.apply, net, stamped, targets, other_key, config, layer, flips)
    r0, c0, r1, c1 = box

    def pointing(group: dict[str, np.ndarray]) -> dict[str, dict]:
        return {name: {"pointing_game": float(pointing_game(jnp.asarray(m), box, config.tolerance).mean())}
                for name, m in group.items()}

    control = {
        "natural": pointing(natural_maps), "natural_target": pointing(natural_target_maps),
        "randomised": pointing(random_maps),
        "chance_pointing_game": (r1 - r0) * (c1 - c0) / float(np.prod(stamped.shape[1:3])),
        "natural_calls_target": float((np.asarray(natural_pred) == config.target).mean()),
        "natural_calls_true_class": float((np.asarray(natural_pred) == true_labels).mean()),
        "explained": "natural: each image's class predicted by the natural model; natural_target: the target, by "
                     "the natural model (the backdoored model's class, only the model changes); randomised: the "
                     "target, by the backdoored model with re-initialised weights"}
    arrays = {**{f"natural_map_{k}": v for k, v in natural_maps.items()},
              **{f"natural_target_map_{k}": v for k, v in natural_target_maps.items()},
              **{f"random_map_{k}": v for k, v in random_maps.items()},
              **{f"floor_map_{k}": v for k, v in floor_maps.items()}}
    randomisation = {"spearman": randomisation_spearman(maps, random_maps),
                     "floor": randomisation_spearman(maps, floor_maps)}
    return control, randomisation, arrays


def _mean_curve(curves: jax.Array) -> list[float]:
    return [float(v) for v in np.asarray(curves).mean(axis=0)]


def score_maps(apply_fn, variables, images, targets, maps, box, config, with_box: bool = True) -> dict[str, Any]:
    """Per method: pointing game, mass in the box, deletion / insertion AUCs and mean curves."""
    out = {}
    for name, m in maps.items():
        m = jnp.asarray(m)
        dele = deletion_curve(apply_fn, variables, images, targets, m, steps=config.curve_steps)
        ins = insertion_curve(apply_fn, variables, images, targets, m, steps=config.curve_steps)
        row = {"pointing_game": float(pointing_game(m, box, config.tolerance).mean()),
               "mass_in_box": float(mass_in_box(jnp.maximum(m, 0), box).mean()),
               "deletion_auc": float(curve_auc(dele).mean()), "insertion_auc": float(curve_auc(ins).mean()),
               "deletion_curve": _mean_curve(dele), "insertion_curve": _mean_curve(ins)}
        out[name] = row
    return out


def run_attribution(config: AttributionConfig, workdir: str | pathlib.Path | None = None, *,
                    progress: bool = True) -> dict[str, Any]:
    """Trains or loads the two models, explains stamped and clean images with every method, runs the
    controls (`run_controls`, unless --controls false), writes results.json, maps.npz and masks.png,
    area_curves.png, deletion_insertion.png into `workdir`."""
    with settings_errors():
        config.validate()
        data = config.load_data()
        config.check_data(data)
    model = create_model(config.model, num_classes=data.num_classes, width=config.width)
    probe = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *data.image_shape))))
    layers = spatial_layers(model.apply, probe, data.image_shape)
    layer = config.grad_cam_layer or (layers[-1] if layers else None)
    if layer not in layers:
        raise SettingsError(f"--grad-cam-layer {layer!r} is not a spatial stage of {config.model} "
                            f"({', '.join(layers) or 'none'})")
    out = prepare_output_dir(pathlib.Path(workdir or config.out or default_out_dir("attribution")),
                             resume=config.resume, overwrite=config.overwrite)
    models_dir = config.models_path(out)
    t0 = time.perf_counter()
    variables, training = train_natural_and_backdoored(config, data, models_dir, progress)
    train_seconds = time.perf_counter() - t0
    box = trigger_box(config.trigger(data.image_shape), data.image_shape)
    net = variables["backdoored"]
    stamped, true_labels, clean, clean_labels = explained_images(model.apply, net, data, config)
    targets = jnp.full(len(stamped), config.target, jnp.int32)
    key = jax.random.key(config.seed)
    t1 = time.perf_counter()
    flips = config.augment and data.flip_ok  # flip jitter only where training flipped (load_data applies --flip)
    maps, extra, seconds = all_maps(model.apply, net, jnp.asarray(stamped), targets, key, config, layer, flips)
    clean_maps, _, _ = all_maps(model.apply, net, jnp.asarray(clean), jnp.asarray(clean_labels),
                                jax.random.fold_in(key, 1), config, layer, flips)
    attribution_seconds = time.perf_counter() - t1
    control, rand, control_maps = None, None, {}
    if config.controls:
        t2 = time.perf_counter()
        control, rand, control_maps = run_controls(model, variables, jnp.asarray(stamped), true_labels, maps,
                                                   key, config, layer, flips, box)
        control_seconds = round(time.perf_counter() - t2, 1)
    scored = score_maps(model.apply, net, jnp.asarray(stamped), targets, maps, box, config)
    scored_clean = score_maps(model.apply, net, jnp.asarray(clean), jnp.asarray(clean_labels), clean_maps, box, config)
    areas = np.asarray(config.areas)
    area_error = np.abs(extra["masks"].mean(axis=(2, 3)) - areas)
    methods = {}
    for name in METHODS:
        s, c = scored[name], scored_clean[name]
        methods[name] = {"pointing_game": s["pointing_game"], "deletion_auc": s["deletion_auc"],
                         "insertion_auc": s["insertion_auc"], "mass_in_box": s["mass_in_box"],
                         "mask_area_error": float(area_error.mean()) if name == "extremal" else None,
                         "seconds": seconds[name], "deletion_curve": s["deletion_curve"],
                         "insertion_curve": s["insertion_curve"],
                         "randomisation_spearman": rand["spearman"][name]["mean"] if rand else None,
                         "randomisation_spearman_sd": rand["spearman"][name]["sd"] if rand else None,
                         "randomisation_floor": rand["floor"][name]["mean"] if rand else None,
                         "randomisation_floor_sd": rand["floor"][name]["sd"] if rand else None,
                         "clean": {"deletion_auc": c["deletion_auc"], "insertion_auc": c["insertion_auc"],
                                   "pointing_game_trigger_box": c["pointing_game"],
                                   "deletion_curve": c["deletion_curve"], "insertion_curve": c["insertion_curve"]}}
    scores = extra["scores"]
    results: dict[str, Any] = {
        "config": dataclasses.asdict(config), **environment(), "dataset": dataset_summary(data),
        "trigger": {"target": config.target, "box": box,
                    "pattern": config.trigger(data.image_shape).name},
        "areas": [float(a) for a in areas], "grad_cam_layer": layer, "models": training,
        "images": {"stamped": len(stamped), "clean": len(clean)}, "methods": methods,
        "area_curve": {"areas": [float(a) for a in areas], "score_mean": [float(v) for v in scores.mean(0)],
                       "score_std": [float(v) for v in scores.std(0)],
                       "mask_area_mean": [float(v) for v in extra["masks"].mean(axis=(0, 2, 3))],
                       "mask_area_error": [float(v) for v in area_error.mean(0)]},
        "train_seconds": round(train_seconds, 1), "attribution_seconds": round(attribution_seconds, 1)}
    if config.controls:
        results["control"] = control
        results["randomisation"] = {
            **rand, "seconds": control_seconds,
            "protocol": "spearman: the trained backdoored model's maps against the maps of the backdoored model with "
                        "re-initialised weights (all layers), the same images, targets and settings, another random "
                        "key (fold_in(key, 3)); floor: the trained model's maps against its own maps with that other "
                        "key (the noise floor; 1 for deterministic methods). Spearman per image over the pixels "
                        "where either map is non-zero; mean and sd null where defined on fewer than half of the "
                        "images (images: defined, constant: a map constant). A method passes when spearman is "
                        "well below its floor"}
    np.savez_compressed(out / "maps.npz", stamped=stamped, labels=true_labels, clean=clean, clean_labels=clean_labels,
                        extremal_masks=extra["masks"], **{f"map_{k}": v for k, v in maps.items()}, **control_maps)
    from anatomy_jax.plots.attribution import plot_all

    with np.load(out / "maps.npz", allow_pickle=False) as arrays:
        results["figures"] = plot_all(results, dict(arrays), out)
    write_json(out / RESULTS_FILE, results)
    return results


def format_summary(results: dict[str, Any]) -> str:
    """The study's numbers in a few lines."""
    t = results["trigger"]
    m = results["models"]
    lines = [f"trigger {t['pattern']} at box {t['box']}, target {t['target']}; backdoored clean acc "
             f"{m['backdoored']['clean_accuracy']:.3f}, trigger ASR {m['backdoored']['trigger_asr']:.3f}; natural clean "
             f"acc {m['natural']['clean_accuracy']:.3f}",
             f"{results['images']['stamped']} stamped images (explained: the target), {results['images']['clean']} "
             f"clean; areas {results['areas']}; Grad-CAM at {results['grad_cam_layer']}",
             f"{'method':22s} {'pointing':>8s} {'in box':>7s} {'del AUC':>8s} {'ins AUC':>8s} {'clean del':>9s} "
             f"{'clean ins':>9s} {'seconds':>8s}"]
    for name, r in results["methods"].items():
        lines.append(f"{name:22s} {r['pointing_game']:8.3f} {r['mass_in_box']:7.3f} {r['deletion_auc']:8.3f} "
                     f"{r['insertion_auc']:8.3f} {r['clean']['deletion_auc']:9.3f} {r['clean']['insertion_auc']:9.3f} "
                     f"{r['seconds']:8.2f}")
    a = results["area_curve"]
    lines.append("extremal: area " + ", ".join(f"{x:.3f} -> mean mask {y:.3f}, score {s:.2f}" for x, y, s in
                                                zip(a["areas"], a["mask_area_mean"], a["score_mean"]))
                 + f"; mask_area_error {results['methods']['extremal']['mask_area_error']:.4f}")
    if "control" in results:
        c = results["control"]
        n = results["images"]["stamped"]
        lines.append(f"controls on the same {n} stamped images (chance pointing {c['chance_pointing_game']:.4f}; the "
                     f"natural model calls {c['natural_calls_target']:.2f} of them the target, "
                     f"{c['natural_calls_true_class']:.2f} their true class). Pointing game of the backdoored model, "
                     "the natural model explaining its own class and the target, the re-initialised backdoored model "
                     "explaining the target; model randomisation (Adebayo et al.): Spearman (non-zero pixels, mean "
                     "+- sd over images) of the trained maps with the re-initialised model's, and the noise floor "
                     "(the trained model's maps with the same other key; 1 for deterministic methods). A method "
                     "passes when the first is well below its floor.")
        lines.append(f"{'method':22s} {'backdoor':>8s} {'nat own':>8s} {'nat tgt':>8s} {'random':>8s}  "
                     f"{'noise floor':>13s}  rho randomised")
        spearman, floor = results["randomisation"]["spearman"], results["randomisation"]["floor"]

        def rho(v: dict) -> str:
            if v["mean"] is None:
                return f"n/a: map constant on {v['constant']} of {n} images"
            return f"{v['mean']:5.2f} +- {v['sd']:4.2f}" + (f" (map constant on {v['constant']} of {n} images)"
                                                            if v["constant"] else "")

        for name, r in results["methods"].items():
            lines.append(f"{name:22s} {r['pointing_game']:8.3f} {c['natural'][name]['pointing_game']:8.3f} "
                         f"{c['natural_target'][name]['pointing_game']:8.3f} "
                         f"{c['randomised'][name]['pointing_game']:8.3f}  {rho(floor[name]):>13s}  "
                         f"{rho(spearman[name])}")
    return "\n".join(lines)
