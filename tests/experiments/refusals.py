"""The shared check of an experiment's CLI refusing bad settings (in-process: a subprocess per case
costs ~7 s of imports; each study's tiny end-to-end run checks the script itself)."""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Sequence

import pytest

from anatomy_jax.experiment.cli import run_main


def assert_refused_early(config_cls: type, run: Callable, summary: Callable, name: str, flags: Sequence[str],
                         message: str, tmp_path: pathlib.Path, capsys: Any) -> None:
    """The experiment's main with `flags` exits 2, prints `message` on stderr and creates no output."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        run_main(config_cls, "", run, summary, name, argv=[*flags, "--out", str(out)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
