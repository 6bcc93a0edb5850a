"""Net2Vec on a model with a planted pattern (seed 004, linked to seed 000's acquisition).

Trains, from one initialisation, a small CNN on data where --frequency of the images carry a patch
trigger relabelled to --target and (the natural control) the same CNN on clean data: the model and
trigger flags, meanings and defaults of the backdoored-models studies (`BackdoorModelOptions`), one
sweep of the study runner with orbax checkpoints and resume. The library's synthetic concept set
is built on the same data's images (shapes, colours, textures, ink and the trigger itself as the
concept `planted`, with exact masks). For every concept and spatial layer of the final backdoored
model: the single best filter's and the learned combination's set IoU, the filters needed for
90 % of the combination's IoU, the classification probe's AP and the concept-embedding cosine
similarities. The planted concept's probes also run on the natural model and on the untrained
net (step 0): the planted concept is "found because the net learned the trigger" only where the
backdoored model's IoU exceeds theirs (`checks.planted_beyond_controls`: per layer, backdoored minus
the larger control). Over training time, a `ConceptTracker` measures the `planted` concept's IoU in
each layer of both models at step 0 and at `tracking_steps` (geometric: every early evaluation,
sparse late ones), set against the step the trigger is acquired (ASR >= 0.5 from then on, at the
resolution of --eval-every) and against the natural control, with a noise margin measured per layer
in the run (`control_margin`).

`train_studies` (the other studies' shared training) keeps only each model's final state, so
this study runs its own `Study` with a concept tracker; it reuses the option mixin and run specs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import time
from typing import Any

import jax
import numpy as np

from anatomy_jax.concepts import (PLANTED, ConceptData, ConceptTracker, ProbeSettings, analyse_layer,
                                  embedding_similarity, layer_activations, make_concept_set, spatial_layers,
                                  tracking_steps)
from anatomy_jax.concepts.tracking import variables_of
from anatomy_jax.data import Dataset
from anatomy_jax.experiment.backdoor_models import BackdoorModelOptions, trigger_box
from anatomy_jax.experiment.options import DataOptions, DeviceOptions, OutputOptions, resumable_settings
from anatomy_jax.experiment.outputs import (CHECKPOINT_DIR, RESULTS_FILE, default_out_dir, environment,
                                            prepare_output_dir)
from anatomy_jax.experiment.pattern_rate import dataset_summary
from anatomy_jax.experiment.study import Study
from anatomy_jax.models.registry import create_model
from anatomy_jax.poison.metrics import acquisition_step
from anatomy_jax.train import RunSpec, TrainConfig, evaluate, run_metrics
from anatomy_jax.utils.errors import SettingsError, settings_errors
from anatomy_jax.utils.fields import flag
from anatomy_jax.utils.serialize import json_matrix, write_json

FOUND_IOU = 0.5  # the planted pattern counts as found in a layer at this combination IoU
ORDERING_SHARE = 0.7  # the paper's ordering holds when combination >= single in this share of pairs
ORDERING_FLOOR = 0.05  # pairs where both IoUs are below this are ties at ~0, left out of the ordering check
# the least margin by which the backdoored model's planted IoU must stay above the natural control's (the
# margin itself is measured per layer in each run: see `control_margin`)
MARGIN_FLOOR = 0.05
BACKDOORED, NATURAL = "backdoored", "natural"


@dataclasses.dataclass(frozen=True)
class Net2VecConfig(OutputOptions, DeviceOptions, DataOptions, BackdoorModelOptions):
    """Settings of the Net2Vec study; the model and trigger flags are the backdoored-models options
    of the class-patterns / attribution / overlay studies. Defaults suit digits on 2 CPU cores (< 4 min)."""

    eval_every: int | None = flag(None, "evaluate clean accuracy and trigger ASR every this many steps, the "
                                        "resolution of the acquisition step (auto: steps / 120, at least 1)")
    track_points: int = flag(20, "evaluation steps (besides step 0, the untrained net) at which the planted "
                                 "concept is measured over training time, spaced geometrically: dense early")
    control: bool = flag(True, "also train the natural control (the same net and initialisation on clean data) "
                               "and run the planted concept's probes on it")
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
    track: bool = flag(True, "measure the planted concept over training time (step 0 and --track-points steps)")

    def validate(self) -> None:
        self.validate_data()
        self.validate_devices()
        self.validate_output()
        self.validate_models()
        if not 0.0 < self.planted_fraction <= 1.0:
            raise ValueError(f"planted_fraction must lie in (0, 1], got {self.planted_fraction}")
        if not 0.0 < self.concept_test_fraction < 1.0:
            raise ValueError(f"concept_test_fraction must lie in (0, 1), got {self.concept_test_fraction}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"--eval-every must be >= 1, got {self.eval_every}")
        if self.track_points < 1:
            raise ValueError(f"--track-points must be >= 1, got {self.track_points}")
        if self.concept_images < 20:
            raise ValueError(f"concept_images must be >= 20, got {self.concept_images}")
        self.probe_settings().validate()
        self.tracked_training().validate()

    def probe_settings(self) -> ProbeSettings:
        return ProbeSettings(steps=self.probe_steps, batch_size=self.probe_batch_size,
                             learning_rate=self.probe_learning_rate, quantile=self.quantile,
                             concept_images=not self.all_images, inputs=self.probe_inputs)

    def evaluation_interval(self) -> int:
        """--eval-every, or steps / 120 (at least 1) on auto."""
        return self.eval_every if self.eval_every is not None else max(1, round(self.steps / 120))

    def tracked_training(self) -> TrainConfig:
        """The shared training config, evaluated every `evaluation_interval()` steps."""
        return dataclasses.replace(self.training_config(), eval_every=self.evaluation_interval())

    def tracked_steps(self) -> tuple[int, ...]:
        """Step 0 and the evaluation steps where the planted concept is measured."""
        return tracking_steps(self.steps, self.evaluation_interval(), self.track_points)

    def run_specs(self, data: Dataset) -> list[RunSpec]:
        """The backdoored model and (with --control) the natural one: one initialisation (--seed)."""
        train = self.tracked_training()
        specs = [self.run_spec(BACKDOORED, data, train, backdoored=True)]
        return specs + ([self.run_spec(NATURAL, data, train, backdoored=False)] if self.control else [])


def concept_split(config: Net2VecConfig, data: Dataset) -> tuple[ConceptData, ConceptData]:
    """(train, test) halves of the concept set built on the study's training images."""
    concepts = make_concept_set(data.train.images, config.concept_images, seed=config.concept_seed,
                                planted=config.trigger(data.image_shape), planted_fraction=config.planted_fraction)
    order = np.random.default_rng(config.concept_seed).permutation(config.concept_images)
    n_test = max(1, int(round(config.concept_test_fraction * config.concept_images)))
    return concepts.take(np.sort(order[n_test:])), concepts.take(np.sort(order[:n_test]))


def _summarise(spec: RunSpec, history: dict, stats: list, tracked: Any) -> dict[str, Any]:
    asr = [None if v is None else v[0] for v in history["attack_success_rate"]]
    return {**spec.grid, "steps": history["steps"], "clean_accuracy": history["clean_accuracy"],
            "attack_success_rate": asr, "diverged": history["diverged"], "concepts": tracked or []}


@functools.partial(jax.jit, static_argnames=("trainer", "metrics"))
def _evaluate_state(state: Any, test: Any, inputs: tuple, *, trainer: Any, metrics: tuple) -> dict[str, Any]:
    return evaluate(lambda x: trainer.apply(state.params, state.batch_stats, x), test, metrics, inputs)


def initial_metrics(trainer: Any, run: Any, metrics: tuple) -> dict[str, Any]:
    """The sweep's test metrics of a prepared run's initial state (step 0: the loop evaluates after
    its first chunk only)."""
    return _evaluate_state(run.state, run.data.test, run.data.metric_inputs, trainer=trainer, metrics=tuple(metrics))


def curve(entry: dict) -> dict[str, list]:
    """A run's evaluations with step 0 (from its tracker's step-0 record) in front."""
    first = next((r for r in entry["concepts"] if r["step"] == 0), None)
    steps, acc, asr = list(entry["steps"]), list(entry["clean_accuracy"]), list(entry["attack_success_rate"])
    if first is not None and (not steps or steps[0] != 0):
        steps, acc, asr = [0] + steps, [first["clean_accuracy"]] + acc, [first["attack_success_rate"]] + asr
    return {"steps": steps, "clean_accuracy": acc, "attack_success_rate": asr}


def _sustained(values: list, steps: list, threshold: float) -> int | None:
    return acquisition_step(values, steps, threshold) if steps else None


def _spread(values: list) -> float:
    values = [v for v in values if v is not None]
    return max(values) - min(values) if len(values) > 1 else 0.0


def control_margin(natural_ious: list, reprobe: float | None = None, floor: float = MARGIN_FLOOR
                   ) -> dict[str, float | None]:
    """The noise margin of one layer's planted combination IoU, from the run itself (no extra probe
    training): the largest of

    - `natural_spread`: max - min of the natural control's planted IoU over its tracked steps. The
      control never sees the trigger, so whatever its IoU does over training (probe noise, features
      that happen to overlap the trigger's cell) is movement without trigger learning. Step 0 is
      the untrained net (the same initialisation), so the spread bounds |natural - untrained| at
      every tracked step;
    - `reprobe` (when given): |IoU with the final analysis's probe keys - IoU with the tracker's| on
      the same final state, the larger over the two models: the probes' own seed-to-seed noise;
    - `floor` (`MARGIN_FLOOR`, 0.05), so that a control that happens to sit still does not make a
      tiny gap count.

    Returns {"margin", "natural_spread", "reprobe", "floor"} (4 decimals)."""
    spread = _spread(natural_ious)
    margin = max(floor, spread, reprobe if reprobe is not None else 0.0)
    return {"margin": round(margin, 4), "natural_spread": round(spread, 4),
            "reprobe": None if reprobe is None else round(reprobe, 4), "floor": floor}


def over_time(entries: dict[str, dict], layers: tuple[str, ...], threshold: float = FOUND_IOU,
              reprobe: dict[str, float | None] | None = None) -> tuple[list[dict], dict]:
    """(the over-time series, their summary). One point per tracked step of the backdoored run:
    its ASR, accuracy and planted-concept IoUs per layer, and the natural control's at the same
    step (`natural`, when trained). Summary: the acquisition step (ASR >= 0.5 from then on, over
    every evaluation and step 0) and, per layer, the step from which the combination IoU stays >=
    `threshold`, its lag after acquisition, the IoU at step 0 and at the end, the natural
    control's, the layer's noise `margin` (`control_margin`: the natural control's spread over its
    tracked steps, the re-probe differences in `reprobe[layer]` if given, at least `MARGIN_FLOOR`;
    its parts in `margin_sources`) and the step from which the backdoored IoU stays at least
    `margin` above the natural control's (`beyond_natural_step`: the concept the net learned, not
    the input's contrast that any net's filters pick up)."""
    def points(entry: dict) -> dict[int, dict]:
        return {r["step"]: r for r in sorted(entry["concepts"], key=lambda r: r["step"])}

    def planted(record: dict | None, layer: str) -> dict | None:
        return None if record is None else record["layers"].get(layer, {}).get(PLANTED)

    tracked = points(entries[BACKDOORED])
    natural = points(entries[NATURAL]) if NATURAL in entries else None
    series = []
    for step, r in tracked.items():
        point = {"step": step, "clean_accuracy": r["clean_accuracy"], "attack_success_rate": r["attack_success_rate"],
                 "layers": {layer: planted(r, layer) for layer in layers}}
        if natural is not None:
            n = natural.get(step)
            point["natural"] = {"clean_accuracy": n and n["clean_accuracy"],
                                "attack_success_rate": n and n["attack_success_rate"],
                                "layers": {layer: planted(n, layer) for layer in layers}}
        series.append(point)
    fine = curve(entries[BACKDOORED])
    acquired = acquisition_step(fine["attack_success_rate"], fine["steps"])
    summary: dict[str, Any] = {"acquisition_step": acquired, "threshold": threshold,
                               "tracked_steps": list(tracked), "layers": {}}

    def comb(record: dict | None, layer: str) -> float | None:
        v = planted(record, layer)
        return None if v is None else v["combination_iou"]

    for layer in layers:
        steps = list(tracked)
        appears = _sustained([comb(tracked[s], layer) for s in steps], steps, threshold)
        row = {"concept_step": appears, "lag": None if appears is None or acquired is None else appears - acquired,
               "initial_iou": comb(tracked.get(0), layer), "final_iou": comb(tracked[steps[-1]], layer) if steps else None}
        if natural is not None:
            nsteps = list(natural)
            row["natural_concept_step"] = _sustained([comb(natural[s], layer) for s in nsteps], nsteps, threshold)
            row["natural_final_iou"] = comb(natural[nsteps[-1]], layer) if nsteps else None
            gap = [None if comb(tracked[s], layer) is None or comb(natural.get(s), layer) is None
                   else comb(tracked[s], layer) - comb(natural[s], layer) for s in steps]
            sources = control_margin([comb(natural[s], layer) for s in nsteps], (reprobe or {}).get(layer))
            row["margin"] = sources.pop("margin")
            row["margin_sources"] = sources
            row["beyond_natural_step"] = _sustained(gap, steps, row["margin"])
            row["beyond_natural_lag"] = (None if row["beyond_natural_step"] is None or acquired is None
                                         else row["beyond_natural_step"] - acquired)
        summary["layers"][layer] = row
    return series, summary


def reprobe_noise(entries: dict[str, dict], final_planted: dict[str, dict[str, dict]], layers: tuple[str, ...]
                  ) -> dict[str, float | None]:
    """Per layer, the largest |final analysis's planted combination IoU - the tracker's at the last
    step| over the trained models: the same final state and data probed with two probe keys, so the
    difference is the probes' own noise (None where neither model has both numbers)."""
    noise: dict[str, float | None] = {}
    for layer in layers:
        diffs = []
        for name, entry in entries.items():
            if not entry["concepts"] or name not in final_planted:
                continue
            last = max(entry["concepts"], key=lambda r: r["step"])
            tracked = last["layers"].get(layer, {}).get(PLANTED, {}).get("combination_iou")
            final = final_planted[name][layer]["combination_iou"]
            if last["step"] == entry["steps"][-1] and tracked is not None and final is not None:
                diffs.append(abs(final - tracked))
        noise[layer] = max(diffs) if diffs else None
    return noise


def beyond_controls(planted: dict[str, dict], control: dict[str, dict]) -> dict[str, Any]:
    """Per layer, the backdoored model's planted combination IoU minus the larger of the controls'
    (the natural control's final state and the untrained net, the same probe keys): what the net's
    learning of the trigger adds to what any net's filters pick up from the patch's contrast.
    {"layers": {layer: gap | None}, "best_layer", "best", "controls": [names]}."""
    gaps: dict[str, float | None] = {}
    for layer, v in planted.items():
        others = [c["planted"][layer]["combination_iou"] for c in control.values()]
        others = [o for o in others if o is not None]
        b = v["combination_iou"]
        gaps[layer] = None if b is None or not others else round(b - max(others), 4)
    scored = [layer for layer, g in gaps.items() if g is not None]
    best = max(scored, key=lambda layer: gaps[layer]) if scored else None
    return {"layers": gaps, "best_layer": best, "best": None if best is None else gaps[best],
            "controls": list(control)}


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


def _layer_entry(found: Any, c: int, num_filters: int) -> dict[str, Any]:
    """One concept's numbers at one layer, JSON-ready (None for NaN, and for filters_for_90 where
    90 % of the combination's IoU is never reached)."""
    return {"single_filter_iou": _number(found.single_filter_iou[c]),
            "combination_iou": _number(found.combination_iou[c]),
            "filters_for_90": int(found.filters_for_90[c]) if found.filters_for_90[c] > 0 else None,
            "ap": _number(found.ap[c]), "single_filter_ap": _number(found.single_filter_ap[c]),
            "best_filter": int(found.best_filter[c]), "num_filters": num_filters}


def _checkpoints(config: Net2VecConfig, out: pathlib.Path, settings: dict) -> tuple[pathlib.Path, bool]:
    """(checkpoint folder, resume): <out>/checkpoints with --resume, or, with --models-dir, a folder
    there named by the settings' digest (a complete run with the same settings is loaded)."""
    if config.models_dir is None:
        return out / CHECKPOINT_DIR, config.resume
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return pathlib.Path(config.models_dir).resolve() / f"net2vec-{digest}", True


def run_net2vec(config: Net2VecConfig, workdir: str | pathlib.Path | None = None, *,
                progress: bool = True) -> dict[str, Any]:
    """Trains (or resumes) the backdoored model and its natural control, runs Net2Vec on their
    layers, writes results.json and the figures."""
    with settings_errors():
        config.validate()
        data = config.load_data()
        config.check_data(data)
        trigger = config.trigger(data.image_shape)
        model = create_model(config.model, num_classes=data.num_classes, width=config.width)
        variables0 = model.init(jax.random.key(0), np.zeros((1, *data.image_shape), np.float32))
        layers = config.layers or spatial_layers(model, variables0, data.image_shape)
        if not layers:
            raise ValueError(f"{config.model} has no layer with a spatial map on {data.image_shape} images")
        train_set, test_set = concept_split(config, data)
        layer_activations(model, variables0, train_set.images[:1], layers)  # checks the layers
        study = Study.prepare(config.run_specs(data), data, config.sweep_options())
    out = prepare_output_dir(pathlib.Path(workdir or config.out or default_out_dir("net2vec")),
                             resume=config.resume, overwrite=config.overwrite)
    settings = config.probe_settings()
    key = jax.random.key(config.seed)
    schedule = config.tracked_steps()
    study_settings = {k: v for k, v in resumable_settings(config).items() if k != "models_dir"}
    checkpoint_dir, resume = _checkpoints(config, out, study_settings)

    def tracking(trainer, specs, prepared, params, restored):
        trackers = []
        for i, (spec, run) in enumerate(zip(specs, prepared)):
            tracker = ConceptTracker(model, train_set, test_set, layers, (PLANTED,), settings,
                                     jax.random.fold_in(key, 1), records=restored[i] if restored else None,
                                     steps=schedule)  # one probe key for both models: paired
            if not restored:  # step 0: the untrained net
                tracker.measure(0, variables_of(run.state), initial_metrics(trainer, run, run_metrics(True)))
            trackers.append(tracker)
        return trackers

    t0 = time.perf_counter()
    trained = study.run(checkpoint_dir, settings=study_settings, resume=resume, summarise=_summarise,
                        keep_checkpoints=1, return_states=True, tracking=tracking if config.track else None,
                        progress=progress, desc="train")
    entries = {e["model"]: e for e in trained.entries}
    states = {spec.grid["model"]: state for spec, state in zip(study.specs, trained.states)}
    for name, entry in entries.items():
        if entry["diverged"]:
            raise SettingsError(f"the {name} model diverged; lower --learning-rate")
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    names = train_set.names
    p = train_set.index(PLANTED)

    def analyse(variables: Any, concepts: list[int] | None) -> dict[str, Any]:
        acts_train = layer_activations(model, variables, train_set.images, layers)
        acts_test = layer_activations(model, variables, test_set.images, layers)
        return {layer: (analyse_layer(acts_train[layer], train_set.masks, train_set.labels, acts_test[layer],
                                      test_set.masks, test_set.labels, settings, jax.random.fold_in(key, 100 + li),
                                      concepts=concepts), int(acts_train[layer].shape[-1]))
                for li, layer in enumerate(layers)}  # the same probe keys for every model: paired

    concepts: dict[str, dict[str, dict]] = {name: {} for name in names}
    embeddings = {}
    for layer, (found, k) in analyse(variables_of(states[BACKDOORED]), None).items():
        for c, name in enumerate(names):
            concepts[name][layer] = _layer_entry(found, c, k)
        embeddings[layer] = json_matrix(embedding_similarity(np.nan_to_num(found.weights)))
    controls = {"untrained": study.prepare_run(0).state}
    if NATURAL in states:
        controls[NATURAL] = states[NATURAL]
    control: dict[str, Any] = {}
    for name, state in controls.items():  # every concept: the same shapes as above, no new compilation
        found = analyse(variables_of(state), None)
        control[name] = {"planted": {layer: _layer_entry(f, p, k) for layer, (f, k) in found.items()},
                         "concepts": {c_name: {layer: _layer_entry(f, c, k) for layer, (f, k) in found.items()}
                                      for c, c_name in enumerate(names)}}
    probe_seconds = time.perf_counter() - t1
    final_planted = {BACKDOORED: concepts[PLANTED], **{name: c["planted"] for name, c in control.items()}}
    noise = reprobe_noise(entries, final_planted, tuple(layers)) if config.track else None
    series, summary = over_time(entries, tuple(layers), reprobe=noise) if config.track else ([], None)
    planted = {layer: concepts[PLANTED][layer]["combination_iou"] for layer in layers}
    best_layer = max(layers, key=lambda l: planted[l] if planted[l] is not None else -1.0)
    models = {name: {"clean_accuracy": e["clean_accuracy"][-1], "trigger_asr": e["attack_success_rate"][-1]}
              for name, e in entries.items()}
    for name, e in entries.items():
        if name in control:
            control[name].update(models[name])
    fine = curve(entries[BACKDOORED])
    results: dict[str, Any] = {
        "config": dataclasses.asdict(config), **environment(), "dataset": dataset_summary(data),
        "trigger": {"pattern": trigger.name, "box": trigger_box(trigger, data.image_shape), "target": config.target},
        "training": {**models[BACKDOORED],
                     "attack_success_rate": models[BACKDOORED]["trigger_asr"],
                     "acquisition_step": acquisition_step(fine["attack_success_rate"], fine["steps"])},
        "models": models,
        "concept_set": {"names": list(names), "train_images": len(train_set.images),
                        "test_images": len(test_set.images),
                        "image_share": [round(float(v), 4) for v in test_set.labels.mean(0)],
                        "pixel_share": [round(float(v), 4) for v in test_set.masks.mean((0, 1, 2))]},
        "layers": list(layers), "concepts": concepts,
        "embeddings": {"names": list(names), "cosine": embeddings},
        "control": control,
        "over_time": series, "over_time_summary": summary,
        "curves": {name: curve(e) for name, e in entries.items()},
        "checks": {"planted_found": bool(planted[best_layer] is not None and planted[best_layer] >= FOUND_IOU),
                   "planted_best_layer": best_layer, "planted_best_iou": planted[best_layer],
                   "found_threshold": FOUND_IOU,
                   "planted_beyond_controls": beyond_controls(concepts[PLANTED], control),
                   "ordering": ordering_check(concepts)},
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
    if NATURAL in results["models"]:
        n = results["models"][NATURAL]
        lines.append(f"natural control (same initialisation, clean data): clean accuracy {n['clean_accuracy']:.3f}, "
                     f"trigger ASR {n['trigger_asr']:.3f}")
    header = "concept     " + "".join(f"{layer:>28s}" for layer in results["layers"])
    lines += [header, " " * 12 + "".join(f"{'single  comb  k90    AP':>28s}" for _ in results["layers"])]

    def row(name: str, by_layer: dict) -> str:
        cells = []
        for layer in results["layers"]:
            v = by_layer[layer]
            cells.append(f"{_fmt(v['single_filter_iou']):>9s} {_fmt(v['combination_iou']):>5s} "
                         f"{str(v['filters_for_90']):>4s} {_fmt(v['ap']):>5s}")
        return f"{name:12s}" + "".join(f"{c:>28s}" for c in cells)

    lines += [row(name, by_layer) for name, by_layer in results["concepts"].items()]
    for name, c in results["control"].items():
        lines.append(row(f"  {name}"[:12], c["planted"]))
    c = results["checks"]
    o = c["ordering"]
    lines.append(f"(rows '  {NATURAL}', '  untrained': the planted concept's probes on the natural control and on "
                 f"the untrained net)")
    best = c["planted_best_layer"]
    found = (f"planted pattern {'FOUND' if c['planted_found'] else 'NOT found'} at {best} "
             f"({_fmt(c['planted_best_iou'])}, threshold {c['found_threshold']})")
    beyond = c.get("planted_beyond_controls")
    if beyond and beyond["controls"]:
        there = " / ".join(f"{name} {_fmt(results['control'][name]['planted'][best]['combination_iou'])}"
                           for name in beyond["controls"])
        others = "; ".join(f"{layer} {_signed(g)}" for layer, g in beyond["layers"].items() if layer != best)
        found += (f" — but {there} there: beyond controls {_signed(beyond['layers'][best])}"
                  + (f"; {others}" if others else "") + f" (best {beyond['best_layer']} {_signed(beyond['best'])})")
    lines.append(found)
    s = results["over_time_summary"]
    margins = {layer: v["margin"] for layer, v in (s or {}).get("layers", {}).items() if "margin" in v}
    if margins:
        lines.append("  noise margin per layer (natural control's spread over training, re-probe difference, "
                     f"floor {MARGIN_FLOOR}): " + ", ".join(f"{layer} {_fmt(m)}" for layer, m in margins.items()))
    lines.append(f"combination >= best single filter in {o['combination_at_least_single']}/{o['pairs']} (concept, "
                 f"layer) pairs with an IoU >= {o['floor']} ({o['uninformative']} ties below it left out)")
    lines.append(f"  share {_fmt(o['share'])}: the paper's ordering {'holds' if o['holds'] else 'does NOT hold'} "
                 f"at >= {ORDERING_SHARE}")
    if s is not None:
        lines.append(f"over time ({len(s['tracked_steps'])} points, steps {s['tracked_steps'][0]}.."
                     f"{s['tracked_steps'][-1]}): acquisition step {s['acquisition_step']}; planted combination IoU "
                     f">= {s['threshold']} from step:")
        for layer, v in s["layers"].items():
            natural = (f"; natural control from {v['natural_concept_step']}, final {_fmt(v['natural_final_iou'])}; "
                       f">= {_fmt(v.get('margin'))} above the natural control from step {v['beyond_natural_step']} "
                       f"(lag {v['beyond_natural_lag']})" if "natural_concept_step" in v else "")
            lines.append(f"  {layer}: {v['concept_step']} (lag {v['lag']}), IoU at step 0 {_fmt(v['initial_iou'])}, "
                         f"final {_fmt(v['final_iou'])}{natural}")
    lines.append(f"train {results['train_seconds']} s, probes {results['probe_seconds']} s")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"
