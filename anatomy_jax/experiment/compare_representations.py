"""Comparing the learned representations of a model zoo (seed 001, Miglani 2019).

A zoo of architectures x seeds is trained on one dataset (the seeds of each architecture as one
sweep, orbax checkpoints under `--zoo`, loaded instead of retrained when they are complete). For
every ordered pair of nets (A, B) and every chosen relative depth, the study measures:

* `cka`: linear CKA of the flattened representations on the eval images, debiased by default
  (`--cka biased` for Kornblith et al.'s estimator, inflated when features outnumber images);
* `svcca` and `pwcca`: SVCCA (Raghu et al. 2017) and projection-weighted CCA (Morcos et al. 2018;
  weights from A) of the spatially averaged representations (channels as neurons) on the fit
  (training) images, where there are enough of them (n >= 10 x kept directions; else unavailable);
* `procrustes`: orthogonal Procrustes distance of the flattened representations (0 = equal up to
  rotation and scale; a distance, so lower is more similar), from thin SVDs;
* `r2`: held-out R^2 of a ridge map from A's flattened representation to B's (fitted on four
  fifths of the fit images, ridge chosen on the other fifth), on the eval (test) images;
* `stitched_accuracy`: accuracy of A up to the layer, the flattened least-squares map, then B;
* `conv_stitched_accuracy` (convolutional depths): the same through a least-squares 1x1-conv
  channel map (`fit_conv_map`);
* `trained_stitched_accuracy`: the map (1x1 conv at convolutional depths, else flattened) trained
  on the task loss through the frozen B from its least-squares start (`train_stitch`).

Depth d in (0, 1] picks, in each net, the stage at that fraction of its stages before the logits;
d = 1 is the penultimate layer (the input of the final linear classifier). Then the adversarial
transfer matrix (L-inf or L2 PGD crafted on A, evaluated on B; `anatomy_jax.adversarial`), the
correlation of each similarity with the transfer rate across pairs of nets (unordered pairs for
symmetric metrics, the transfer rate averaged over both directions) with a Mantel permutation test
over net labels (pairs that share a net are not independent), the same-architecture (different
seeds) vs different-architecture difference per architecture with a permutation p-value, the
cosine between the nets' input gradients (saliency maps) and its relation to transfer, and the
paper's three claims stated against the measured numbers.
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
from tqdm.auto import tqdm

from anatomy_jax.adversarial import NORMS, attack_dataset, make_attack, transfer_matrix
from anatomy_jax.data import Dataset, subset
from anatomy_jax.experiment.outputs import RESULTS_FILE, ZOO_DIR, default_out_dir, environment, prepare_output_dir
from anatomy_jax.utils.serialize import json_matrix, matrix_from_json, write_json
from anatomy_jax.utils.statistics import group_difference_test, mantel_test
from anatomy_jax.experiment.options import DataOptions, DeviceOptions, OutputOptions, resumable_settings
from anatomy_jax.experiment.study import Study
from anatomy_jax.models import MODEL_NAMES, check_model_names
from anatomy_jax.similarity import (fit_conv_map, fit_ridge_cv, linear_cka, procrustes_distance, pwcca, r2_score,
                                    representation_shape, representations, ridge_basis, stitched_accuracy, svcca,
                                    input_gradients, saliency_cosine_matrix, train_stitch)
from anatomy_jax.train import SCHEDULES, RunSpec, TrainConfig, to_float
from anatomy_jax.utils import SettingsError, flag, settings_errors

METRICS = ("cka", "svcca", "pwcca", "procrustes", "r2", "stitched_accuracy", "conv_stitched_accuracy",
           "trained_stitched_accuracy")
SYMMETRIC = ("cka", "svcca", "procrustes")  # the same value for (A, B) and (B, A)
# higher = more similar for all but the Procrustes distance
SIMILARITY_SIGN = {m: (-1 if m == "procrustes" else 1) for m in METRICS}
CKA_ESTIMATORS = ("debiased", "biased")
MAX_FLAT_MAP_ENTRIES = 2 ** 28  # a flattened d_a x d_b map above 1 GiB of float32 is skipped (use the conv map)


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
    cka: str = flag("debiased", "CKA estimator: debiased (unbiased HSIC, Song et al. 2012) or biased (Kornblith et al. "
                                "2019; inflated when features outnumber images)")
    svcca_variance: float = flag(0.99, "share of variance SVCCA keeps in each representation")
    stitch_steps: int = flag(0, "steps of the trained stitch (Adam on the task loss, from the least-squares map), "
                                "e.g. 100; 0 = least-squares stitches only (the default zoo's time with trained "
                                "stitches is not measured yet)")
    stitch_learning_rate: float = flag(1e-3, "learning rate of the trained stitch")
    attack_eps: float = flag(0.1, "PGD radius on [0, 1] pixels (the paper's CIFAR-10 setting: 8/255 = 0.031)")
    attack_steps: int = flag(10, "PGD steps")
    attack_step_size: float | None = flag(None, "PGD step size (auto: 2.5 eps / steps)")
    attack_norm: str = flag("linf", f"PGD norm: {', '.join(NORMS)}")
    attack_targeted: bool = flag(False, "targeted PGD: pull each image toward class (label + 1) mod classes; "
                                        "transfer then means the other net also predicts that class")
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
        if self.cka not in CKA_ESTIMATORS:
            raise ValueError(f"unknown CKA estimator {self.cka!r}; choose one of {', '.join(CKA_ESTIMATORS)}")
        if not 0.0 < self.svcca_variance <= 1.0:
            raise ValueError(f"svcca_variance must be in (0, 1], got {self.svcca_variance}")
        if self.stitch_steps < 0 or not self.stitch_learning_rate > 0:
            raise ValueError("stitch_steps must be >= 0 and stitch_learning_rate > 0")
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
    pooled_fit: np.ndarray  # spatial mean of conv maps on the fit images (the flattened vector otherwise)

    @property
    def conv(self) -> bool:
        return len(self.shape) == 3


def net_reps(net: Net, layers: Sequence[str], fit_images: np.ndarray, eval_images: np.ndarray,
             image_shape: tuple[int, int, int]) -> dict[str, LayerReps]:
    """One net's representations at every layer in `layers` (one pass over each image set)."""
    layers = list(dict.fromkeys(layers))
    fit = representations(net.model, net.variables, fit_images, layers)
    ev = representations(net.model, net.variables, eval_images, layers)
    out = {}
    for layer in layers:
        shape = representation_shape(net.model, net.variables, image_shape, layer)
        pooled = fit[layer].reshape(len(fit[layer]), *shape).mean(axis=(1, 2)) if len(shape) == 3 else fit[layer]
        out[layer] = LayerReps(layer, shape, fit[layer], ev[layer], pooled)
    return out


def _holdout_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed 80/20 split of the fit images for choosing the ridge."""
    order = np.random.default_rng(0).permutation(n)
    cut = int(round(0.8 * n))
    return order[:cut], order[cut:]


def _cca_or_nan(fn: Callable[[], jax.Array]) -> float:
    """A CCA-family value, or NaN where the images are too few for the kept dimension."""
    try:
        return float(fn())
    except ValueError:
        return float("nan")


def _stitches(config: CompareConfig, net_b: Net, a: LayerReps, b: LayerReps, fit_labels: np.ndarray,
              eval_labels: np.ndarray, flat_map: tuple | None, key: jax.Array) -> dict[str, float]:
    """Least-squares 1x1-conv stitch (conv depths) and the trained stitch, on the eval images."""
    out = {}
    start, conv = flat_map, False
    if a.conv and b.conv:
        h_a_fit, h_b_fit = a.fit.reshape(len(a.fit), *a.shape), b.fit.reshape(len(b.fit), *b.shape)
        try:
            w, c = fit_conv_map(h_a_fit, h_b_fit, ridge=config.ridges[0])
        except ValueError:  # spatial sizes that do not divide: no conv stitch at this depth
            w = None
        if w is not None:
            out["conv_stitched_accuracy"] = stitched_accuracy(
                net_b.model, net_b.variables, b.layer, a.eval.reshape(len(a.eval), *a.shape), w, c, b.shape,
                eval_labels, conv=True)
            start, conv = (w, c), True
    if config.stitch_steps and start is not None:
        h_fit = a.fit.reshape(len(a.fit), *a.shape) if conv else a.fit
        h_eval = a.eval.reshape(len(a.eval), *a.shape) if conv else a.eval
        w, c = train_stitch(net_b.model, net_b.variables, b.layer, h_fit, jnp.asarray(start[0]), jnp.asarray(start[1]),
                            b.shape, fit_labels, key=key, steps=config.stitch_steps,
                            learning_rate=config.stitch_learning_rate, conv=conv)
        out["trained_stitched_accuracy"] = stitched_accuracy(net_b.model, net_b.variables, b.layer, h_eval, w, c,
                                                             b.shape, eval_labels, conv=conv)
    return out


def compare_at_depth(config: CompareConfig, nets: list[Net], reps: list[LayerReps], labels: np.ndarray,
                     fit_labels: np.ndarray, progress: bool = True) -> dict[str, Any]:
    """Every metric for every ordered pair of nets at one depth: {metric: M x M matrix, ridge: M x M}."""
    m = len(nets)
    out = {k: np.full((m, m), np.nan) for k in (*METRICS, "ridge")}
    train_idx, val_idx = _holdout_split(len(reps[0].fit))
    debiased = config.cka == "debiased"
    bar = tqdm(total=m * m, desc=f"compare at {reps[0].layer}", unit="pair", disable=not progress)
    for i in range(m):
        a = reps[i]
        basis = None
        for j in range(m):
            b = reps[j]
            if i == j:
                for k in ("cka", "svcca", "pwcca", "r2"):
                    out[k][i, j] = 1.0
                out["procrustes"][i, j] = 0.0
                for k in ("stitched_accuracy", "conv_stitched_accuracy", "trained_stitched_accuracy"):
                    out[k][i, j] = nets[j].eval_accuracy
                bar.update()
                continue
            if j > i:  # symmetric indices: computed once per unordered pair
                out["cka"][i, j] = out["cka"][j, i] = float(linear_cka(a.eval, b.eval, debiased=debiased))
                out["procrustes"][i, j] = out["procrustes"][j, i] = float(procrustes_distance(a.eval, b.eval))
                out["svcca"][i, j] = out["svcca"][j, i] = _cca_or_nan(
                    lambda: svcca(a.pooled_fit, b.pooled_fit, variance=config.svcca_variance))
            out["pwcca"][i, j] = _cca_or_nan(lambda: pwcca(a.pooled_fit, b.pooled_fit))
            flat_map = None
            if a.fit.shape[1] * b.fit.shape[1] <= MAX_FLAT_MAP_ENTRIES:
                basis = ridge_basis(a.fit[train_idx]) if basis is None else basis  # one SVD per source
                w, c, ridge, _ = fit_ridge_cv(a.fit[train_idx], b.fit[train_idx], a.fit[val_idx], b.fit[val_idx],
                                              config.ridges, basis=basis)
                out["ridge"][i, j] = ridge
                out["r2"][i, j] = float(r2_score(b.eval, a.eval @ w + c))
                out["stitched_accuracy"][i, j] = stitched_accuracy(nets[j].model, nets[j].variables, b.layer, a.eval,
                                                                   w, c, b.shape, labels)
                flat_map = (w, c)
            stitches = _stitches(config, nets[j], a, b, fit_labels, labels, flat_map,
                                 jax.random.fold_in(jax.random.key(4321), i * m + j))
            for k, v in stitches.items():
                out[k][i, j] = v
            bar.update()
    bar.close()
    return out


def adversarial_transfer(config: CompareConfig, nets: list[Net], images: np.ndarray, labels: np.ndarray,
                         num_classes: int, progress: bool = True) -> dict[str, np.ndarray]:
    """PGD examples crafted on each net, classified by every net: the transfer matrix and error rates
    (targeted: the rate at which the target net predicts the attack's target class)."""
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
    # targeted: "correct" means not pulled to the target class (transfer = the target net predicts it too)
    targets = (labels + 1) % num_classes if config.attack_targeted else None
    adv_correct = np.zeros((m, m, len(labels)), bool)
    for i, source in enumerate(tqdm(nets, desc="PGD transfer", unit="net", disable=not progress)):
        adv = attack_dataset(attacks[source.architecture], source.variables, x, labels,
                             jax.random.fold_in(jax.random.key(1234), i), targets=targets)
        for j, target in enumerate(nets):
            predicted = predict(target, adv)
            adv_correct[i, j] = predicted != targets if targets is not None else predicted == labels
    result = transfer_matrix(clean_correct, adv_correct)
    result["clean_accuracy"] = clean_correct.mean(axis=1)
    return result


def transfer_correlations(similarity: dict[str, np.ndarray], transfer: np.ndarray,
                          permutations: int = 2000) -> dict[str, dict[str, Any]]:
    """Spearman's rho between each similarity matrix and the transfer matrix across pairs of nets,
    with a Mantel p-value (net labels permuted): unordered pairs for symmetric metrics (transfer
    averaged over both directions), ordered pairs otherwise."""
    symmetric_transfer = (transfer + transfer.T) / 2
    out = {}
    for metric, matrix in similarity.items():
        symmetric = metric in SYMMETRIC
        t = symmetric_transfer if symmetric else transfer
        result = mantel_test(matrix, t, num_permutations=permutations, symmetric=symmetric)
        out[metric] = {"spearman": result["statistic"], "p_value": result["p_value"], "pairs": result["pairs"],
                       "test": "mantel", "unordered_pairs": symmetric,
                       "expected_sign": SIMILARITY_SIGN.get(metric, 1)}
    return out


def same_vs_cross(nets: list[Net], matrix: np.ndarray, permutations: int = 2000) -> dict[str, dict[str, Any]]:
    """Per architecture: mean over its different-seed pairs vs mean over its pairs with other
    architectures (ordered pairs, both directions), their difference and a permutation p-value
    (architecture labels permuted over the nets)."""
    labels = [n.architecture for n in nets]
    test = group_difference_test(matrix, labels, num_permutations=permutations)
    out = {}
    for arch in dict.fromkeys(labels):
        same, cross = [], []
        for (i, a), (j, b) in itertools.permutations(enumerate(nets), 2):
            if arch not in (a.architecture, b.architecture) or not np.isfinite(matrix[i, j]):
                continue
            (same if a.architecture == b.architecture else cross).append(matrix[i, j])
        per = test["per_label"].get(str(arch), {})
        out[arch] = {"same": float(np.mean(same)) if same else None, "cross": float(np.mean(cross)) if cross else None,
                     "same_pairs": len(same), "cross_pairs": len(cross), "difference": per.get("statistic"),
                     "p_value": per.get("p_value")}
    out["all"] = {"same": test["same_mean"], "cross": test["cross_mean"], "difference": test["statistic"],
                  "p_value": test["p_value"]}
    return out


def saliency_comparison(nets: list[Net], images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """M x M mean cosine between the nets' input gradients of the true-class loss (saliency maps)."""
    x = np.asarray(to_float(jnp.asarray(images)))
    grads = [input_gradients(lambda z, net=net: net.model.apply(net.variables, z), x, labels) for net in nets]
    return np.asarray(saliency_cosine_matrix(grads))


def paper_claims(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's three claims (seed 001) against the measured numbers, at the penultimate depth."""
    depth = max(results["depths"], key=float)
    d = results["depths"][depth]
    nets = results["nets"]
    stitched = matrix_from_json(d["stitched_accuracy"])
    own = np.asarray([n["eval_accuracy"] for n in nets])
    cross = [(i, j) for i in range(len(nets)) for j in range(len(nets))
             if nets[i]["architecture"] != nets[j]["architecture"] and np.isfinite(stitched[i, j])]
    claims = []
    if cross:
        drop = float(np.mean([own[j] - stitched[i, j] for i, j in cross]))
        claims.append({"claim": "cross-architecture linear maps keep accuracy at the penultimate layer",
                       "measured": f"stitched accuracy {np.mean([stitched[i, j] for i, j in cross]):.3f} vs the "
                                   f"target nets' own {np.mean([own[j] for _, j in cross]):.3f} over {len(cross)} "
                                   f"cross-architecture pairs (mean drop {100 * drop:.1f} points)",
                       "holds": bool(drop <= 0.05)})
    overall = d["same_vs_cross"]["cka"]["all"]
    if overall.get("difference") is not None:
        claims.append({"claim": "same-architecture pairs are not systematically more similar than cross-architecture "
                                "pairs (the paper: retraining does not give more similar geometry, except ResNeXt)",
                       "measured": f"{results['cka_estimator']} CKA same {overall['same']:.3f} vs cross "
                                   f"{overall['cross']:.3f} (difference {overall['difference']:+.3f}, permutation "
                                   f"p = {overall['p_value']:.3g})",
                       "holds": bool(overall["p_value"] >= 0.05 or overall["difference"] <= 0)})
    corr = d["spearman_vs_transfer"]["cka"]
    if corr["spearman"] is not None:
        claims.append({"claim": "representation similarity correlates positively with adversarial transfer",
                       "measured": f"Spearman {corr['spearman']:+.2f} between {results['cka_estimator']} CKA and the "
                                   f"transfer rate over {corr['pairs']} unordered pairs (Mantel p = "
                                   f"{corr['p_value']:.3g})",
                       "holds": bool(corr["spearman"] > 0 and corr["p_value"] < 0.05)})
    return claims


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
    adversarial = adversarial_transfer(config, nets, test.images, test.labels, data.num_classes, progress)
    for net, acc in zip(nets, adversarial["clean_accuracy"]):
        net.eval_accuracy = float(acc)
    results: dict[str, Any] = {
        "config": dataclasses.asdict(config), "settings": _settings(config), **environment(), "zoo": training["zoo"],
        "dataset": {"name": data.name, "train_images": len(data.train), "fit_images": len(fit),
                    "eval_images": len(test), "image_shape": list(data.image_shape)},
        "diverged": diverged,
        "nets": [{"name": n.name, "architecture": n.architecture, "seed": n.seed, "test_accuracy": n.test_accuracy,
                  "eval_accuracy": n.eval_accuracy} for n in nets],
        "metrics": {"cka": f"linear CKA ({config.cka}), flattened, eval images",
                    "svcca": f"SVCCA ({config.svcca_variance:g} of the variance kept), spatial mean, fit images",
                    "pwcca": "PWCCA of row net with column net (row's weights), spatial mean, fit images",
                    "procrustes": "orthogonal Procrustes distance, flattened (lower = more similar)",
                    "r2": "held-out R^2 of the ridge map row -> column, flattened",
                    "stitched_accuracy": "accuracy of row net -> least-squares flattened map -> column net "
                                         "(diagonal: own accuracy)",
                    "conv_stitched_accuracy": "the same through a least-squares 1x1-conv channel map (conv depths)",
                    "trained_stitched_accuracy": f"the map trained {config.stitch_steps} steps on the task loss "
                                                 "through the frozen column net, from its least-squares start"},
        "cka_estimator": config.cka,
        "adversarial": {"eps": config.attack_eps, "norm": config.attack_norm, "steps": config.attack_steps,
                        "targeted": config.attack_targeted,
                        **{k: json_matrix(adversarial[k]) for k in ("transfer", "error", "counts")}},
        "depths": {}, "seconds": {"training": round(train_seconds, 1)}}
    t0 = time.perf_counter()
    all_reps = [net_reps(net, [layer_at_depth(net.model.layer_names, d) for d in config.depths], fit.images,
                         test.images, data.image_shape) for net in nets]
    for depth in config.depths:
        key = f"{depth:g}"
        reps = [all_reps[k][layer_at_depth(net.model.layer_names, depth)] for k, net in enumerate(nets)]
        matrices = compare_at_depth(config, nets, reps, test.labels, fit.labels, progress)
        similarity = {k: matrices[k] for k in METRICS}
        results["depths"][key] = {
            "layers": [r.layer for r in reps],
            "dims": [int(r.fit.shape[1]) for r in reps],
            **{k: json_matrix(v) for k, v in matrices.items()},
            "spearman_vs_transfer": transfer_correlations(similarity, adversarial["transfer"]),
            "same_vs_cross": {metric: same_vs_cross(nets, matrices[metric]) for metric in METRICS}}
    results["same_vs_cross_transfer"] = same_vs_cross(nets, adversarial["transfer"])
    saliency = saliency_comparison(nets, test.images, test.labels)
    results["input_gradients"] = {
        "cosine": json_matrix(saliency),
        "description": "mean over eval images of the cosine between two nets' input gradients of the true-class loss",
        "spearman_vs_transfer": transfer_correlations({"input_gradient_cosine": saliency},
                                                      adversarial["transfer"])["input_gradient_cosine"],
        "same_vs_cross": same_vs_cross(nets, saliency)}
    results["claims"] = paper_claims(results)
    results["seconds"]["comparison"] = round(time.perf_counter() - t0, 1)
    write_json(out / RESULTS_FILE, results)
    from anatomy_jax.plots.compare_representations import plot_all

    results["figures"] = plot_all(results, out)
    write_json(out / RESULTS_FILE, results)
    return results


def format_summary(results: dict[str, Any]) -> str:
    """Accuracies, each depth's metrics (correlation with transfer and Mantel p; same vs cross per
    architecture), input gradients, and the paper's claims against the numbers."""
    lines = ["net accuracies: " + ", ".join(f"{n['name']} {n['eval_accuracy']:.3f}" for n in results["nets"])]
    for key, d in results["depths"].items():
        lines.append(f"\ndepth {key} ({', '.join(sorted(set(d['layers'])))}):")
        lines.append(f"{'metric':>26} {'rho vs transfer':>15} {'Mantel p':>8}  same - cross (permutation p): all; "
                     "per architecture")
        for metric in METRICS:
            corr = d["spearman_vs_transfer"][metric]
            svc = d["same_vs_cross"][metric]
            per_arch = "  ".join(f"{arch} {_fmt(v['difference'], '+.3f')} ({_fmt(v['p_value'], '.2g')})"
                                 for arch, v in svc.items() if arch != "all")
            lines.append(f"{metric:>26} {_fmt(corr['spearman'], '+.2f'):>15} {_fmt(corr['p_value'], '.3f'):>8}  "
                         f"{_fmt(svc['all']['difference'], '+.3f')} ({_fmt(svc['all']['p_value'], '.2g')}); {per_arch}")
    t = results["same_vs_cross_transfer"]
    lines.append("\nadversarial transfer rate (same architecture / other architectures): "
                 + "  ".join(f"{arch} {_fmt(v['same'])}/{_fmt(v['cross'])}" for arch, v in t.items() if arch != "all"))
    g = results["input_gradients"]["spearman_vs_transfer"]
    lines.append(f"input-gradient cosine vs transfer: rho {_fmt(g['spearman'], '+.2f')} (Mantel p "
                 f"{_fmt(g['p_value'], '.3f')})")
    lines.append("\nthe paper's claims against the numbers:")
    for c in results.get("claims", []):
        lines.append(f"  [{'holds' if c['holds'] else 'does not hold'}] {c['claim']}: {c['measured']}")
    return "\n".join(lines)


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)
