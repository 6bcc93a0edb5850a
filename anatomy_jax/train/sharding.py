"""Device meshes for sweeps: a `runs` axis (independent runs) and a `data` axis (batch split).

A sweep stacks its runs along a leading axis; that axis is sharded over the mesh's `runs` axis,
so each device trains its own runs and no collective runs during training. For models too big
for one device per run, the `data` axis splits each batch over devices (gradients averaged with
`pmean`). The helpers work the same on one process and on several (`jax.distributed`): arrays are
built from host copies that every process holds, and read back with an all-gather.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

RUNS = "runs"
DATA = "data"


def make_sweep_mesh(num_devices: int = 0, data_parallel: int = 1) -> Mesh:
    """A (runs, data) mesh over the first `num_devices` devices (0 = all of them, every process).

    `data_parallel` devices share each run's batch; the rest of the devices hold different runs.
    """
    available = jax.device_count()
    n = available if num_devices == 0 else num_devices
    if not 1 <= n <= available:
        raise ValueError(f"asked for {num_devices} devices, but {available} are available")
    if data_parallel < 1 or n % data_parallel:
        raise ValueError(f"data_parallel={data_parallel} must divide the {n} devices")
    if jax.process_count() > 1 and n != available:
        raise ValueError("with several processes the mesh must use every device (leave the device count on 0)")
    devices = jax.devices()[:n]
    return jax.make_mesh((n // data_parallel, data_parallel), (RUNS, DATA), devices=devices)


def runs_axis_size(mesh: Mesh) -> int:
    return mesh.shape[RUNS]


def put(tree: Any, mesh: Mesh, spec: P) -> Any:
    """Places a pytree of host or device arrays on `mesh` with `spec` (every process holds the
    whole host value, so this works unchanged across processes). Arrays already placed so are
    returned as they are."""
    sharding = NamedSharding(mesh, spec)

    def place(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x  # already placed (e.g. restored from a checkpoint)
        host = np.asarray(jax.device_get(x)) if not isinstance(x, np.ndarray) else x
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)


def to_host(tree: Any) -> Any:
    """The whole value of (possibly sharded, possibly multi-process) arrays as numpy arrays."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def initialize_multihost() -> None:
    """Joins a multi-process job (TPU pod slice, several GPU hosts, or local CPU processes).

    Call before any other JAX work. On Cloud TPU and SLURM/MPI clusters `jax.distributed` finds the
    coordinator itself; elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0),
    JAX_NUM_PROCESSES and JAX_PROCESS_ID. CPU collectives across processes use gloo.
    """
    if jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if "JAX_NUM_PROCESSES" in os.environ:
        kwargs = {"num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
                  "process_id": int(os.environ["JAX_PROCESS_ID"])}
    jax.distributed.initialize(**kwargs)


def is_primary_process() -> bool:
    """Process 0 writes results and figures; every process takes part in checkpoints."""
    return jax.process_index() == 0
