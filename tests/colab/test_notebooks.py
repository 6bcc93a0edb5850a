"""The notebooks in colab/ run top to bottom on the CPU at their small sizes, from either the
repository root or colab/ as the working directory, and are stored without outputs."""

from __future__ import annotations

import pathlib
import re
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
# Half run from the repository root, half from colab/ (the setup cell looks upward for setup.py).
WORKDIRS = {nb.name: (ROOT if i % 2 else ROOT / "colab") for i, nb in enumerate(NOTEBOOKS)}


def test_every_theme_has_a_notebook():
    names = {nb.stem for nb in NOTEBOOKS}
    assert names == {"pattern_acquisition", "training_dynamics", "representations", "class_patterns",
                     "attribution", "concepts"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has stored outputs"
    setup = code[0].source
    # the install cell: one place for the repository and its ref, a jax[tpu] install on TPU runtimes
    assert re.search(r'^REPO_URL = "', setup, re.M) and re.search(r'^REF = "', setup, re.M)
    assert "jax[tpu]" in setup and "setup.py" in setup and "jax.devices()" in setup


def test_readme_links_every_notebook_to_colab():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for nb in NOTEBOOKS:
        assert re.search(rf"colab\.research\.google\.com/github/[^)\s]+/colab/{re.escape(nb.name)}", readme), nb.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_cpu(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("ANATOMY_JAX_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(WORKDIRS[path.name])}}).execute()
    seconds = time.perf_counter() - start
    print(f"{path.name}: {seconds:.1f} s")
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "CpuDevice" in text  # the setup cell printed jax.devices() and the small sizes ran
    pngs = sorted(p.name for p in tmp_path.rglob("*.png"))
    assert pngs, "the notebook's studies wrote no figures"
    shown = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))
    assert shown >= 2, f"{path.name} drew {shown} figures inline"
