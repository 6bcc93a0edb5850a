"""Similarity overlays across layers and models (seed 004): where does the feature at a query
location reappear in another image?

Trains (or loads) three models of one architecture on the same data: natural, backdoored and a
second backdoored seed. Two queries: the trigger's centre on a stamped test image, and the
brightest ink pixel of a clean test image. For each query, layer and model the cosine similarity
of the query location's activation with every location of another image (another stamped image,
another image of the same class) is upsampled to the image (`concepts.similarity_overlay`); across
the two seeds the query's activations are first mapped into the second net's channels by a 1x1
convolution fitted on training images (`similarity.fit_conv_map`), since independently trained
nets do not share channel meanings.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.concepts import layer_activations, peak_location, similarity_overlay, spatial_layers
from anatomy_jax.data import Dataset
from anatomy_jax.experiment.backdoor_models import BackdoorModelOptions, train_studies, trigger_box
from anatomy_jax.experiment.options import DataOptions, DeviceOptions, OutputOptions
from anatomy_jax.experiment.outputs import RESULTS_FILE, default_out_dir, environment, prepare_output_dir
from anatomy_jax.experiment.pattern_rate import dataset_summary
from anatomy_jax.experiment.study import Study
from anatomy_jax.models.registry import create_model
from anatomy_jax.poison import make_patterns, stamp_everywhere
from anatomy_jax.similarity import apply_conv_map, fit_conv_map
from anatomy_jax.train.evaluation import to_float
from anatomy_jax.utils.errors import settings_errors
from anatomy_jax.utils.fields import flag
from anatomy_jax.utils.serialize import write_json

MODELS = ("natural", "backdoored", "backdoored_seed2")
CROSS = "backdoored->seed2"  # the backdoored net's query, mapped into the second seed's channels


@dataclasses.dataclass(frozen=True)
class SimilarityOverlayConfig(OutputOptions, DeviceOptions, DataOptions, BackdoorModelOptions):
    """Settings of the overlay study; defaults suit digits on 2 CPU cores (< 3 min)."""

    layers: tuple[str, ...] | None = flag(None, "layers to overlay (default: every layer with a spatial map)")
    query_image: int = flag(0, "which non-target test image carries the queries (the next one is the other image)")
    fit_images: int = flag(1000, "training images the 1x1-conv map between the two seeds is fitted on")
    second_seed: int | None = flag(None, "seed of the second backdoored model (default: --seed + 1)")

    def validate(self) -> None:
        self.validate_data()
        self.validate_devices()
        self.validate_output()
        self.validate_models()
        if self.query_image < 0 or self.fit_images < 1:
            raise ValueError("query_image must be >= 0 and fit_images >= 1")
        if self.second_seed is not None and self.second_seed == self.seed:
            raise ValueError("--second-seed must differ from --seed")

    def seed2(self) -> int:
        return self.seed + 1 if self.second_seed is None else self.second_seed


def overlay_studies(config: SimilarityOverlayConfig, data: Dataset) -> dict[str, Study]:
    """One study of the three models (one trainer, one sweep)."""
    with settings_errors():
        specs = [config.run_spec("natural", data, backdoored=False), config.run_spec("backdoored", data, backdoored=True),
                 config.run_spec("backdoored_seed2", data, backdoored=True, seed=config.seed2())]
        return {"models": Study.prepare(specs, data, config.sweep_options())}


def query_images(config: SimilarityOverlayConfig, data: Dataset) -> dict[str, Any]:
    """The two queries: (name, query image, other image, query pixel), images uint8 (H, W, C)."""
    labels = np.asarray(data.test.labels)
    others = np.flatnonzero(labels != config.target)
    if config.query_image + 1 >= len(others):
        raise ValueError(f"--query-image {config.query_image}: the test set has {len(others)} non-target images")
    spec = config.trigger(data.image_shape)
    patterns = make_patterns([spec], data.image_shape)
    pick = others[config.query_image:config.query_image + 2]
    x = to_float(jnp.asarray(data.test.images[pick]))
    stamped = np.asarray(stamp_everywhere(x, patterns))
    stamped = np.round(stamped * 255).astype(np.uint8)
    box = trigger_box(spec, data.image_shape)
    clean = int(pick[0])
    same = np.flatnonzero(labels == labels[clean])
    other_clean = int(same[same != clean][0]) if len(same) > 1 else int(pick[1])
    ink = np.asarray(data.test.images[clean], np.float32).mean(-1)
    return {"trigger": {"query": stamped[0], "other": stamped[1], "yx": ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2),
                        "query_index": int(pick[0]), "other_index": int(pick[1]), "stamped": True},
            "stroke": {"query": data.test.images[clean], "other": data.test.images[other_clean],
                       "yx": tuple(int(v) for v in np.unravel_index(np.argmax(ink), ink.shape)),
                       "query_index": clean, "other_index": other_clean, "stamped": False}}


def _chebyshev_to_box(yx: tuple[int, int], box: list[int]) -> int:
    """Pixels from (row, col) to the box [row0, col0, row1, col1) (0 inside)."""
    r, c = yx
    dr = max(box[0] - r, 0, r - (box[2] - 1))
    dc = max(box[1] - c, 0, c - (box[3] - 1))
    return int(max(dr, dc))


def run_similarity_overlay(config: SimilarityOverlayConfig, workdir: str | pathlib.Path | None = None, *,
                           progress: bool = True) -> dict[str, Any]:
    """Trains or loads the models, computes every overlay, writes results.json, overlays.npz and
    overlays.png into `workdir` (default `config.out`)."""
    with settings_errors():
        config.validate()
        data = config.load_data()
        config.check_data(data)
        model = create_model(config.model, num_classes=data.num_classes, width=config.width)
        variables0 = model.init(jax.random.key(0), jnp.zeros((1, *data.image_shape)))
        unknown = [name for name in config.layers or () if name not in model.layer_names]
        if unknown:
            raise ValueError(f"unknown layer(s) {unknown}; {config.model} has {', '.join(model.layer_names)}")
        layers = config.layers or spatial_layers(model, variables0, data.image_shape)
        if not layers:
            raise ValueError(f"{config.model} has no layer with a spatial map on {data.image_shape} images")
        layer_activations(model, variables0, data.test.images[:1], layers)  # checks the names
        queries = query_images(config, data)
        studies = overlay_studies(config, data)
    out = prepare_output_dir(pathlib.Path(workdir or config.out or default_out_dir("similarity_overlay")),
                             resume=config.resume, overwrite=config.overwrite)
    models_dir = config.models_path(out)
    t0 = time.perf_counter()
    variables, training = train_studies(studies, config.model_settings(data) | {"second_seed": config.seed2()},
                                        models_dir, progress)
    train_seconds = time.perf_counter() - t0
    box = trigger_box(config.trigger(data.image_shape), data.image_shape)
    size = tuple(data.image_shape[:2])
    fit = np.asarray(data.train.images[np.random.default_rng(config.seed).permutation(len(data.train))[
        :config.fit_images]])
    pair = np.stack([np.stack([q["query"], q["other"]]) for q in queries.values()])  # (queries, 2, H, W, C)
    acts = {m: layer_activations(model, variables[m], pair.reshape(-1, *data.image_shape), layers) for m in MODELS}
    fit_a = layer_activations(model, variables["backdoored"], fit, layers)
    fit_b = layer_activations(model, variables["backdoored_seed2"], fit, layers)
    columns = [(layer, m) for layer in layers for m in (*MODELS, CROSS)]
    maps = np.zeros((len(queries), len(columns), *size), np.float32)
    peaks: dict[str, dict] = {q: {m: {} for m in (*MODELS, CROSS)} for q in queries}
    conv_maps = {layer: fit_conv_map(fit_a[layer], fit_b[layer]) for layer in layers}
    for qi, (qname, q) in enumerate(queries.items()):
        for ci, (layer, m) in enumerate(columns):
            if m == CROSS:
                w, b = conv_maps[layer]
                query_acts = apply_conv_map(jnp.asarray(acts["backdoored"][layer][2 * qi:2 * qi + 1]), w, b)[0]
                other_acts = acts["backdoored_seed2"][layer][2 * qi + 1]
            else:
                query_acts, other_acts = acts[m][layer][2 * qi], acts[m][layer][2 * qi + 1]
            maps[qi, ci] = np.asarray(similarity_overlay(query_acts, q["yx"], other_acts, image_size=size))
            peaks[qname][m][layer] = list(peak_location(maps[qi, ci]))
    inside = np.zeros(size, bool)
    inside[box[0]:box[2], box[1]:box[3]] = True
    trigger_row = list(queries).index("trigger")

    def contrast(ci: int) -> float:
        """Mean similarity inside the other image's trigger minus outside: unlike the peak (which a
        distinctive patch draws even in an untrained net), a number that can differ between models."""
        sim = maps[trigger_row, ci]
        return float(sim[inside].mean() - sim[~inside].mean())

    trigger_peaks = {m: {layer: {"peak": peaks["trigger"][m][layer],
                                 "in_trigger": _chebyshev_to_box(peaks["trigger"][m][layer], box) == 0,
                                 "distance_px": _chebyshev_to_box(peaks["trigger"][m][layer], box),
                                 "contrast": contrast(columns.index((layer, m)))}
                         for layer in layers} for m in (*MODELS, CROSS)}
    results = {"config": dataclasses.asdict(config), **environment(), "dataset": dataset_summary(data),
               "trigger": {"target": config.target, "box": box, "pattern": config.trigger(data.image_shape).name},
               "models": training, "layers": list(layers),
               "queries": [{"name": n, "yx": list(q["yx"]), "query_image": q["query_index"],
                            "other_image": q["other_index"], "stamped": q["stamped"]} for n, q in queries.items()],
               "columns": [{"layer": layer, "model": m} for layer, m in columns],
               "peaks": peaks, "trigger_peaks": trigger_peaks, "train_seconds": round(train_seconds, 1)}
    np.savez_compressed(out / "overlays.npz", overlays=maps, query_images=pair[:, 0], other_images=pair[:, 1])
    from anatomy_jax.plots.concepts import overlay_grid

    fig = overlay_grid(pair[:, 1], maps, row_labels=[f"{n} query" for n in queries],
                       column_labels=[f"{layer}\n{m}" for layer, m in columns],
                       queries=[q["yx"] for q in queries.values()],
                       peaks=np.array([[peaks[n][m][layer] for layer, m in columns] for n in queries]),
                       query_images=pair[:, 0])
    fig.savefig(out / "overlays.png", dpi=110, bbox_inches="tight")
    results["figures"] = ["overlays.png"]
    write_json(out / RESULTS_FILE, results)
    return results


def format_summary(results: dict[str, Any]) -> str:
    lines = [f"trigger {results['trigger']['pattern']} at box {results['trigger']['box']}; layers "
             f"{', '.join(results['layers'])}"]
    for name, m in results["models"].items():
        lines.append(f"{name:17s} clean acc {m['clean_accuracy']:.3f}, trigger ASR {m['trigger_asr']:.3f}")
    for m, per_layer in results["trigger_peaks"].items():
        cells = ", ".join(f"{layer} " + ("in box" if v["in_trigger"] else f"{v['distance_px']} px off")
                          + f" (contrast {v['contrast']:+.2f})" for layer, v in per_layer.items())
        lines.append(f"trigger query on another stamped image, {m}: peak {cells}")
    return "\n".join(lines)
