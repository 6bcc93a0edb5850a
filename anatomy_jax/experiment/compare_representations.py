"""Comparing the learned representations of a model zoo (seed 001, Miglani 2019).

A zoo of architectures x seeds is trained on one dataset (the seeds of each architecture as one
sweep, orbax checkpoints under `--zoo`, loaded instead of retrained when they are complete). For
every ordered pair of nets (A, B) and every chosen relative depth, the study measures:

* `cka`: linear CKA of the flattened representations (biased HSIC, Kornblith et al. 2019);
* `pwcca`: projection-weighted CCA (Morcos et al. 2018) of the spatially averaged
  representations (channels as neurons: CCA needs more examples than neurons), weights from A;
* `procrustes`: orthogonal Procrustes distance of the flattened representations (0 = equal up to
  rotation and scale; a distance, so lower is more similar);
* `r2`: held-out R^2 of a ridge map from A's flattened representation to B's (fitted on four
  fifths of the fit images, ridge chosen on the other fifth), on the eval (test) images;
* `stitched_accuracy`: accuracy of A up to the layer, the map, then B from that layer on.

Depth d in (0, 1] picks, in each net, the stage at that fraction of its stages before the logits;
d = 1 is the penultimate layer (the input of the final linear classifier). Then the adversarial
transfer matrix (L-inf or L2 PGD crafted on A, evaluated on B; `anatomy_jax.adversarial`), the
Spearman correlation across ordered pairs between each similarity and the transfer rate, and the
same-architecture (different seeds) vs different-architecture means per architecture.
`run_compare(config, workdir)` runs what `experiments/compare_representations.py` runs.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import pathlib
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from anatomy_jax.adversarial import NORMS, attack_dataset, make_attack, transfer_matrix
from anatomy_jax.data import Dataset, subset
from anatomy_jax.experiment.outputs import RESULTS_FILE, ZOO_DIR, default_out_dir, environment, prepare_output_dir
from anatomy_jax.utils.serialize import json_matrix, write_json
from anatomy_jax.experiment.options import DataOptions, DeviceOptions, OutputOptions, resumable_settings
from anatomy_jax.experiment.study import Study
from anatomy_jax.models import MODEL_NAMES, check_model_names
from anatomy_jax.similarity import (fit_ridge_cv, linear_cka, procrustes_distance, pwcca, r2_score,
                                    representation_shape, representations, ridge_basis, stitched_accuracy)
from anatomy_jax.train import SCHEDULES, RunSpec, TrainConfig, to_float
from anatomy_jax.utils import SettingsError, flag, settings_errors

METRICS = ("cka", "pwcca", "procrustes", "r2", "stitched_accuracy")
# higher = more similar for all but the Procrustes distance
SIMILARITY_SIGN = {"cka": 1, "pwcca": 1, "procrustes": -1, "r2": 1, "stitched_accuracy": 1}


@dataclasses.dataclass(frozen=True)
class CompareConfig(OutputOptions, DeviceOptions, DataOptions):
    """Settings of the representation comparison; defaults suit digits on 2 CPU cores (~6 min)."""

    models: tuple[str, ...] = flag(("cnn", "vgg11", "resnet18", "resnext29"),
                                   f"architectures of the zoo: {', '.join(MODEL_NAMES)}")
    width: float = flag(0.25, "channel width multiplier (reduced for CPU runs; 1 for the paper)")
    seeds: tuple[int, ...] = flag((0, 1, 2), "seeds per architecture (>= 2 for same-architecture pairs)")
    epochs: int = flag(15, "training epochs")
    batch_size: int = flag(128, "batch size")
    learning_rate: float = flag(0.05, "SGD learning rate (momentum 0.9)")
    schedule: str = flag("cosine", f"learning-rate schedule: {', '.join(SCHEDULES)}")
    weight_decay: float = flag(5e-4, "weight decay")
    augment: bool = flag(True, "random crop/flip where the dataset allows it")
    dtype: str = flag("float32", "compute dtype: float32, or bfloat16 for mixed precision (parameters, optimizer "
                                 "state and logits stay float32; for GPU/TPU)")
    adversarial_eps: float = flag(0.0, "train the zoo with PGD adversarial training of this radius (0 = standard)")
    depths: tuple[float, ...] = flag((0.5, 1.0), "relative depths compared, in (0, 1]; 1 = penultimate layer")
    fit_images: int = flag(10000, "training images the linear maps are fitted on (0 = all)")
    eval_images: int = flag(2000, "test images for similarities, R^2, stitching and attacks (0 = all)")
    ridges: tuple[float, ...] = flag((1e-4, 1e-3, 1e-2, 1e-1, 1.0), "ridge grid (relative to the mean squared "
                                                                    "singular value of the source representation)")
    attack_eps: float = flag(0.1, "PGD radius on [0, 1] pixels (the paper's CIFAR-10 setting: 8/255 = 0.031)")
    attack_steps: int = flag(10, "PGD steps")
    attack_step_size: float | None = flag(None, "PGD step size (auto: 2.5 eps / steps)")
    attack_norm: str = flag("linf", f"PGD norm: {', '.join(NORMS)}")
    checkpoint_every: int = flag(5, "save an orbax checkpoint every this many epochs")
    zoo: str | None = flag(None, "directory of the zoo's checkpoints, one folder per architecture (default: "
                                 "<out>/zoo); complete ones with the same training settings are loaded, "
                                 "the others trained (or continued) and saved there")

    def validate(self) -> None:
        self.validate_data()
        self.validate_devices()
        self.validate_output()
        check_model_names(self.models)
        if len(set(self.models)) != len(self.models) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("models and seeds must not repeat")
        if len(self.models) * len(self.seeds) < 2:
            raise ValueError("the zoo needs at least two nets to compare")
        bad = [d for d in self.depths if not 0.0 < d <= 1.0]
        if bad or not self.depths:
            raise ValueError(f"depths must lie in (0, 1], got {list(self.depths)}")
        if self.epochs < 1 or self.checkpoint_every < 1:
            raise ValueError("epochs and checkpoint_every must be >= 1")
        if self.fit_images < 0 or self.eval_images < 0:
            raise ValueError("fit_images and eval_images must be >= 0")
        if not self.ridges or any(r < 0 for r in self.ridges):
            raise ValueError(f"ridges must be >= 0, got {list(self.ridges)}")
        if not self.attack_eps > 0 or self.attack_steps < 1:
            raise ValueError("attack_eps must be > 0 and attack_steps >= 1")
        if self.attack_norm not in NORMS:
            raise ValueError(f"unknown attack norm {self.attack_norm!r}; choose one of {', '.join(NORMS)}")
        self.training_config(self.models[0], 1).validate()

    def training_config(self, model: str, steps_per_epoch: int) -> TrainConfig:
        """How every seed of `model` trains (clean data, one learning rate)."""
        return TrainConfig(model=model, width=self.width, schedule=self.schedule, weight_decay=self.weight_decay,
                           augment=self.augment, dtype=self.dtype, adversarial_eps=self.adversarial_eps,
                           steps=self.epochs * steps_per_epoch, batch_size=self.batch_size,
                           eval_every=steps_per_epoch, checkpoint_every=steps_per_epoch * self.checkpoint_every,
                           keep_checkpoints=2)

    def training_settings(self, model: str) -> dict[str, Any]:
        """What a loaded or continued zoo member must have been trained with (JSON-normalised)."""
        keys = ("dataset", "train_size", "flip", "width", "seeds", "epochs", "batch_size", "learning_rate",
                "schedule", "weight_decay", "augment", "dtype", "adversarial_eps")
        return json.loads(json.dumps({"model": model, **{k: getattr(self, k) for k in keys}}))


@dataclasses.dataclass
class Net:
    """One member of the zoo."""

    name: str  # "<architecture>/<seed>"
    architecture: str
    seed: int
    model: Any
    variables: dict[str, Any]
    test_accuracy: float  # on the whole test split, at the end of training
    eval_accuracy: float = float("nan")  # on the eval images the comparison uses


def layer_at_depth(layer_names: Sequence[str], depth: float) -> str:
    """The stage at relative depth `depth` in (0, 1] among the stages before the logits (1 = the
    penultimate representation, the input of the final linear classifier)."""
    stages = list(layer_names[:-1])
    return stages[max(0, math.ceil(depth * len(stages) - 1e-9) - 1)]


def _summarise_net(spec: RunSpec, history: dict, stats: list, tracked: Any) -> dict[str, Any]:
    return {**spec.grid, "steps": history["steps"], "clean_accuracy": history["clean_accuracy"],
            "diverged": history["diverged"], "diverged_at_step": history["diverged_at_step"]}


def zoo_studies(config: CompareConfig, data: Dataset) -> dict[str, Study]:
    """One prepared study per architecture (its seeds); SettingsError for settings that cannot work."""
    steps_per_epoch = len(data.train) // config.batch_size
    studies = {}
    with settings_errors():
        for architecture in config.models:
            specs = [RunSpec(config.training_config(architecture, steps_per_epoch), seed, config.learning_rate,
                             grid={"architecture": architecture, "seed": seed}) for seed in config.seeds]
            studies[architecture] = Study.prepare(specs, data, config.sweep_options())
    return studies


def train_zoo(config: CompareConfig, data: Dataset, zoo_dir: str | pathlib.Path, progress: bool = True,
              diverged: list[str] | None = None,
              on_update: Callable[[str, list[dict]], None] | None = None,
              studies: dict[str, Study] | None = None) -> list[Net]:
    """Every architecture's seeds trained as one study (or loaded from `zoo_dir/<architecture>`).

    Each architecture is its own study in its own folder, so zoos of different architecture lists
    share members; a complete one is loaded, an interrupted one continues. A run that diverged is
    left out of the zoo (its name appended to `diverged`). `on_update(architecture, entries)`
    streams each architecture's training runs (with their status) as they progress. `studies`
    (from `zoo_studies`) are prepared here when not given."""
    zoo_dir = pathlib.Path(zoo_dir).resolve()  # orbax wants absolute paths
    studies = zoo_studies(config, data) if studies is None else studies
    nets = []
    for architecture, study in studies.items():
        trained = study.run(zoo_dir / architecture, settings=config.training_settings(architecture), resume=True,
                            summarise=_summarise_net, keep_checkpoints=2, keep_chunk_states=True,
                            return_states=True, progress=progress, desc=f"train {architecture}",
                            on_update=None if on_update is None else functools.partial(on_update, architecture))
        model = study.trainer(0).model
        for spec, state, history in zip(study.specs, trained.states, trained.histories):
            if history["diverged"]:
                print(f"warning: {architecture} seed {spec.seed} diverged at step {history['diverged_at_step']} "
                      "and is left out of the comparison (lower --learning-rate)", file=sys.stderr)
                if diverged is not None:
                    diverged.append(f"{architecture}/{spec.seed}")
                continue
            variables = jax.device_put({"params": state.params,
                                        **({"batch_stats": state.batch_stats} if state.batch_stats else {})})
            nets.append(Net(f"{architecture}/{spec.seed}", architecture, spec.seed, model, variables,
                            float(history["clean_accuracy"][-1])))
    return nets


@dataclasses.dataclass
class LayerReps:
    """One net's representation at one layer: flattened on the fit and eval images, pooled on eval."""

    layer: str
    shape: tuple[int, ...]
    fit: np.ndarray
    eval: np.ndarray
    pooled: np.ndarray  # spatial mean of conv maps (the flattened vector otherwise)


def net_reps(net: Net, layers: Sequence[str], fit_images: np.ndarray, eval_images: np.ndarray,
             image_shape: tuple[int, int, int]) -> dict[str, LayerReps]:
    """One net's representations at every layer in `layers` (one pass over each image set)."""
    layers = list(dict.fromkeys(layers))
    fit = representations(net.model, net.variables, fit_images, layers)
    ev = representations(net.model, net.variables, eval_images, layers)
    out = {}
    for layer in layers:
        shape = representation_shape(net.model, net.variables, image_shape, layer)
        pooled = ev[layer].reshape(len(ev[layer]), *shape).mean(axis=(1, 2)) if len(shape) == 3 else ev[layer]
        out[layer] = LayerReps(layer, shape, fit[layer], ev[layer], pooled)
    return out


def _holdout_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed 80/20 split of the fit images for choosing the ridge."""
    order = np.random.default_rng(0).permutation(n)
    cut = int(round(0.8 * n))
    return order[:cut], order[cut:]


def compare_at_depth(config: CompareConfig, nets: list[Net], reps: list[LayerReps], labels: np.ndarray,
                     progress: bool = True) -> dict[str, Any]:
    """Every metric for every ordered pair of nets at one depth: {metric: M x M matrix, ridge: M x M}."""
    m = len(nets)
    out = {k: np.full((m, m), np.nan) for k in (*METRICS, "ridge")}
    train_idx, val_idx = _holdout_split(len(reps[0].fit))
    bar = tqdm(total=m * m, desc=f"compare at {reps[0].layer}", unit="pair", disable=not progress)
    for i in range(m):
        a = reps[i]
        basis = ridge_basis(a.fit[train_idx])  # one SVD per source, shared by every target and ridge
        for j in range(m):
            b = reps[j]
            if i == j:
                out["cka"][i, j] = out["pwcca"][i, j] = out["r2"][i, j] = 1.0
                out["procrustes"][i, j] = 0.0
                out["stitched_accuracy"][i, j] = nets[j].eval_accuracy
                bar.update()
                continue
            if j > i:  # symmetric indices: computed once per unordered pair
                out["cka"][i, j] = out["cka"][j, i] = float(linear_cka(a.eval, b.eval))
                out["procrustes"][i, j] = out["procrustes"][j, i] = float(procrustes_distance(a.eval, b.eval))
            if len(a.pooled) > max(a.pooled.shape[1], b.pooled.shape[1]):
                out["pwcca"][i, j] = float(pwcca(a.pooled, b.pooled))
            w, c, ridge, _ = fit_ridge_cv(a.fit[train_idx], b.fit[train_idx], a.fit[val_idx], b.fit[val_idx],
                                          config.ridges, basis=basis)
            out["ridge"][i, j] = ridge
            out["r2"][i, j] = float(r2_score(b.eval, a.eval @ w + c))
            out["stitched_accuracy"][i, j] = stitched_accuracy(nets[j].model, nets[j].variables, b.layer, a.eval, w,
                                                               c, b.shape, labels)
            bar.update()
    bar.close()
    return out


def adversarial_transfer(config: CompareConfig, nets: list[Net], images: np.ndarray, labels: np.ndarray,
                         progress: bool = True) -> dict[str, np.ndarray]:
    """PGD examples crafted on each net, classified by every net: the transfer matrix and error rates."""
    x = np.asarray(to_float(jnp.asarray(images)))
    predictors, attacks = {}, {}
    for net in nets:  # one compiled attack and predictor per architecture, shared by its seeds
        if net.architecture not in attacks:
            def apply_fn(variables, z, model=net.model):
                return model.apply(variables, z)
            attacks[net.architecture] = make_attack(apply_fn, eps=config.attack_eps, norm=config.attack_norm,
                                                    steps=config.attack_steps, step_size=config.attack_step_size)
            predictors[net.architecture] = jax.jit(lambda v, z, f=apply_fn: f(v, z).argmax(-1))

    def predict(net, z):
        return np.concatenate([np.asarray(predictors[net.architecture](net.variables, jnp.asarray(z[k:k + 500])))
                               for k in range(0, len(z), 500)])

    m = len(nets)
    clean_correct = np.stack([predict(net, x) == labels for net in nets])
    adv_correct = np.zeros((m, m, len(labels)), bool)
    for i, source in enumerate(tqdm(nets, desc="PGD transfer", unit="net", disable=not progress)):
        adv = attack_dataset(attacks[source.architecture], source.variables, x, labels,
                             jax.random.fold_in(jax.random.key(1234), i))
        for j, target in enumerate(nets):
            adv_correct[i, j] = predict(target, adv) == labels
    result = transfer_matrix(clean_correct, adv_correct)
    result["clean_accuracy"] = clean_correct.mean(axis=1)
    return result


def rank_correlations(similarity: dict[str, np.ndarray], transfer: np.ndarray) -> dict[str, dict[str, Any]]:
    """Spearman rho between each similarity matrix and the transfer matrix over ordered pairs i != j."""
    off = ~np.eye(len(transfer), dtype=bool)
    out = {}
    for metric in METRICS:
        s, t = similarity[metric][off], transfer[off]
        ok = np.isfinite(s) & np.isfinite(t)
        if ok.sum() < 3 or np.ptp(s[ok]) == 0 or np.ptp(t[ok]) == 0:
            out[metric] = {"spearman": None, "p_value": None, "pairs": int(ok.sum())}
            continue
        rho, p = stats.spearmanr(s[ok], t[ok])
        out[metric] = {"spearman": float(rho), "p_value": float(p), "pairs": int(ok.sum()),
                       "expected_sign": SIMILARITY_SIGN[metric]}
    return out


def same_vs_cross(nets: list[Net], matrix: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per architecture: mean over its different-seed pairs vs mean over its pairs with other
    architectures (ordered pairs, both directions)."""
    out = {}
    for arch in dict.fromkeys(n.architecture for n in nets):
        same, cross = [], []
        for (i, a), (j, b) in itertools.permutations(enumerate(nets), 2):
            if arch not in (a.architecture, b.architecture) or not np.isfinite(matrix[i, j]):
                continue
            (same if a.architecture == b.architecture else cross).append(matrix[i, j])
        out[arch] = {"same": float(np.mean(same)) if same else None, "cross": float(np.mean(cross)) if cross else None,
                     "same_pairs": len(same), "cross_pairs": len(cross)}
    return out


def _settings(config: CompareConfig) -> dict[str, Any]:
    return {k: v for k, v in resumable_settings(config).items() if k != "zoo"}


def run_compare(config: CompareConfig, workdir: str | pathlib.Path | None = None, *,
                progress: bool = True) -> dict[str, Any]:
    """Trains or loads the zoo, compares every pair, writes results.json and the figures."""
    with settings_errors():  # every check that can fail runs before --out is touched
        config.validate()
        data = config.load_data()
        if len(data.train) < config.batch_size:
            raise ValueError(f"batch size {config.batch_size} exceeds the {len(data.train)} training images")
        studies = zoo_studies(config, data)
    out = prepare_output_dir(workdir or config.out or default_out_dir("compare_representations"),
                             resume=config.resume, overwrite=config.overwrite)
    zoo_dir = pathlib.Path(config.zoo) if config.zoo else out / ZOO_DIR
    t0 = time.perf_counter()
    diverged: list[str] = []
    training = {"config": dataclasses.asdict(config), **environment(), "zoo": {}}

    def stream(architecture: str, entries: list[dict]) -> None:  # results.json while the zoo trains
        training["zoo"][architecture] = entries
        write_json(out / RESULTS_FILE, training)

    nets = train_zoo(config, data, zoo_dir, progress, diverged, on_update=stream, studies=studies)
    train_seconds = time.perf_counter() - t0
    if len(nets) < 2:
        raise SettingsError(f"fewer than two nets left to compare: {', '.join(diverged)} diverged; "
                            "lower --learning-rate")

    fit = subset(data.train, config.fit_images) if config.fit_images else data.train
    test = subset(data.test, config.eval_images) if config.eval_images else data.test
    adversarial = adversarial_transfer(config, nets, test.images, test.labels, progress)
    for net, acc in zip(nets, adversarial["clean_accuracy"]):
        net.eval_accuracy = float(acc)
    results: dict[str, Any] = {
        "config": dataclasses.asdict(config), "settings": _settings(config), **environment(), "zoo": training["zoo"],
        "dataset": {"name": data.name, "train_images": len(data.train), "fit_images": len(fit),
                    "eval_images": len(test), "image_shape": list(data.image_shape)},
        "diverged": diverged,
        "nets": [{"name": n.name, "architecture": n.architecture, "seed": n.seed, "test_accuracy": n.test_accuracy,
                  "eval_accuracy": n.eval_accuracy} for n in nets],
        "metrics": {"cka": "linear CKA, flattened", "pwcca": "PWCCA of row net with column net, spatial mean",
                    "procrustes": "orthogonal Procrustes distance, flattened (lower = more similar)",
                    "r2": "held-out R^2 of the ridge map row -> column, flattened",
                    "stitched_accuracy": "accuracy of row net -> map -> column net (diagonal: own accuracy)"},
        "adversarial": {"eps": config.attack_eps, "norm": config.attack_norm, "steps": config.attack_steps,
                        **{k: json_matrix(adversarial[k]) for k in ("transfer", "error", "counts")}},
        "depths": {}, "seconds": {"training": round(train_seconds, 1)}}
    t0 = time.perf_counter()
    all_reps = [net_reps(net, [layer_at_depth(net.model.layer_names, d) for d in config.depths], fit.images,
                         test.images, data.image_shape) for net in nets]
    for depth in config.depths:
        key = f"{depth:g}"
        reps = [all_reps[k][layer_at_depth(net.model.layer_names, depth)] for k, net in enumerate(nets)]
        matrices = compare_at_depth(config, nets, reps, test.labels, progress)
        results["depths"][key] = {
            "layers": [r.layer for r in reps],
            "dims": [int(r.fit.shape[1]) for r in reps],
            **{k: json_matrix(v) for k, v in matrices.items()},
            "spearman_vs_transfer": rank_correlations(matrices, adversarial["transfer"]),
            "same_vs_cross": {metric: same_vs_cross(nets, matrices[metric]) for metric in METRICS}}
    results["same_vs_cross_transfer"] = same_vs_cross(nets, adversarial["transfer"])
    results["seconds"]["comparison"] = round(time.perf_counter() - t0, 1)
    write_json(out / RESULTS_FILE, results)
    from anatomy_jax.plots.compare_representations import plot_all

    results["figures"] = plot_all(results, out)
    write_json(out / RESULTS_FILE, results)
    return results


def format_summary(results: dict[str, Any]) -> str:
    """Accuracies, the penultimate comparison (cross-architecture means, same vs cross per
    architecture) and the rank correlations with adversarial transfer."""
    lines = ["net accuracies: " + ", ".join(f"{n['name']} {n['eval_accuracy']:.3f}" for n in results["nets"])]
    for key, d in results["depths"].items():
        lines.append(f"\ndepth {key} ({', '.join(sorted(set(d['layers'])))}):")
        lines.append(f"{'metric':>18} {'spearman vs transfer':>21}  per architecture: mean over its other-seed pairs / "
                     "over its pairs with other architectures")
        for metric in METRICS:
            rho = d["spearman_vs_transfer"][metric]["spearman"]
            per_arch = "  ".join(f"{arch} {_fmt(v['same'])}/{_fmt(v['cross'])}"
                                 for arch, v in d["same_vs_cross"][metric].items())
            lines.append(f"{metric:>18} {_fmt(rho):>21}  {per_arch}")
    t = results["same_vs_cross_transfer"]
    lines.append("\nadversarial transfer rate (same architecture / other architectures): "
                 + "  ".join(f"{arch} {_fmt(v['same'])}/{_fmt(v['cross'])}" for arch, v in t.items()))
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
