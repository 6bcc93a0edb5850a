"""Executes a notebook of colab/ on the CPU (at its small sizes) and checks what it showed."""

from __future__ import annotations

import pathlib
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
# The bound is 60 s per notebook on 2 idle cores (measured: 22-37 s, README); in the suite a notebook
# shares the cores with another worker, so the test allows 2.5 times that: it catches a notebook that takes
# the accelerator sizes or trains what it should load, not noise.
SECONDS_BOUND = 150


def run_notebook(name: str, out: pathlib.Path, workdir: pathlib.Path, monkeypatch) -> None:
    """Runs colab/<name>.ipynb in a fresh kernel with `workdir` as its working directory and its
    outputs under `out`; asserts it printed the CPU device, wrote and showed figures, in time."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("ANATOMY_JAX_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(ROOT / "colab" / f"{name}.ipynb", as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    seconds = time.perf_counter() - start
    print(f"{name}.ipynb: {seconds:.1f} s")
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "CpuDevice" in text  # the setup cell printed jax.devices(), so the small sizes ran
    assert list(out.rglob("*.png")), f"{name}: the studies wrote no figures"
    shown = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))
    assert shown >= 2, f"{name} drew {shown} figures inline"
    assert seconds <= SECONDS_BOUND, f"{name} took {seconds:.0f} s on the CPU"
