"""The notebooks in colab/: one per theme, stored without outputs, linked from the README. (Each
is executed by test_pattern_notebooks_run.py or test_analysis_notebooks_run.py: two files, so the
parallel workers share them.)"""

from __future__ import annotations

import re

import pytest

from tests.colab.notebooks import NOTEBOOKS, ROOT
from tests.colab.test_analysis_notebooks_run import ANALYSIS
from tests.colab.test_pattern_notebooks_run import PATTERNS


def test_every_theme_has_a_notebook_and_every_notebook_runs_in_a_test():
    names = {nb.stem for nb in NOTEBOOKS}
    assert names == {"pattern_acquisition", "training_dynamics", "representations", "class_patterns",
                     "attribution", "concepts"}
    assert sorted(PATTERNS + ANALYSIS) == sorted(names)


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
