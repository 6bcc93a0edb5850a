"""Orbax checkpoints behind two functions: `save` and `restore_latest`.

A checkpoint holds a train state (any pytree of arrays) and a JSON document (metric history,
progress through a sweep). Step directories are named by orbax: `<directory>/<step>/`.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp


def checkpoint_manager(directory: str | pathlib.Path, max_to_keep: int | None = 3) -> ocp.CheckpointManager:
    """One manager per output directory; keeps the newest `max_to_keep` checkpoints (None: all,
    for callers that prune with `prune`). A checkpoint is written to a temporary directory and
    renamed when complete; temporary directories left by a killed process are removed here, so
    the newest checkpoint is always a complete one."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options,
                                 item_names=("state", "meta"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
    """Saves `state` and the JSON-serialisable `meta` at `step` (synchronously)."""
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                 force=True)
    manager.wait_until_finished()


def latest_meta(manager: ocp.CheckpointManager) -> tuple[int, dict] | None:
    """(step, meta) of the newest checkpoint, or None when there is none (no state restored)."""
    step = manager.latest_step()
    if step is None:
        return None
    restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return step, restored["meta"]


def meta_at(manager: ocp.CheckpointManager, step: int) -> dict:
    """The JSON document of the checkpoint at `step` (no state restored)."""
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any) -> tuple[int, Any, dict] | None:
    """(step, state, meta) of the newest checkpoint, with `state` shaped like `abstract_state`."""
    step = manager.latest_step()
    if step is None:
        return None
    return restore_step(manager, step, abstract_state)


def restore_step(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[int, Any, dict]:
    """(step, state, meta) of the checkpoint at `step`, with `state` shaped like `abstract_state`."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                             meta=ocp.args.JsonRestore()))
    return step, restored["state"], restored["meta"]


def prune(manager: ocp.CheckpointManager, keep: int, protected: Callable[[int], bool] = lambda step: False) -> None:
    """Deletes all but the newest `keep` checkpoints, sparing the steps `protected` accepts."""
    steps = sorted(manager.all_steps())
    for step in steps[:-keep] if keep > 0 else steps:
        if not protected(step):
            manager.delete(step)
