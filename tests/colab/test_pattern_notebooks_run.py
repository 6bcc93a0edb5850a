"""The pattern-acquisition, training-dynamics and representations notebooks run on the CPU, from
the repository root or from colab/ (the setup cell looks upward for setup.py)."""

from __future__ import annotations

import pytest

from tests.colab.notebooks import ROOT, run_notebook

PATTERNS = ["pattern_acquisition", "training_dynamics", "representations"]


@pytest.mark.slow
@pytest.mark.parametrize("name, workdir", [(n, ROOT if i % 2 else ROOT / "colab") for i, n in enumerate(PATTERNS)])
def test_notebook_runs_on_cpu(name, workdir, tmp_path, monkeypatch):
    run_notebook(name, tmp_path, workdir, monkeypatch)
