"""Orbax checkpoints behind two functions: `save` and `restore_latest`.

A checkpoint holds a train state (any pytree of arrays) and a JSON document (metric history,
progress through a sweep). Step directories are named by orbax: `<directory>/<step>/`.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


def checkpoint_manager(directory: str | pathlib.Path, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """One manager per output directory; keeps the newest `max_to_keep` checkpoints."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
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


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any) -> tuple[int, Any, dict] | None:
    """(step, state, meta) of the newest checkpoint, with `state` shaped like `abstract_state`."""
    step = manager.latest_step()
    if step is None:
        return None
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                             meta=ocp.args.JsonRestore()))
    return step, restored["state"], restored["meta"]
