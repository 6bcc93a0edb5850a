"""The shared study runner as a user meets it: exact resume from any checkpoint, signals, SIGKILL,
streamed results, and settings checked before the output directory is touched."""

import dataclasses
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import pytest

from anatomy_jax.experiment.pattern_rate import PatternRateConfig, train_and_evaluate
from tests.conftest import ROOT

SCRIPT = str(ROOT / "experiments" / "pattern_rate.py")
# Intervals that do not align: evaluations every 7 steps, checkpoints every 10.
UNALIGNED = PatternRateConfig(seeds=(0,), frequencies=(0.1,), correlations=(0.0, 1.0), learning_rates=(0.05,), steps=40,
                              eval_every=7, checkpoint_every=10, batch_size=64, width=0.5)
CLI = ["--frequencies", "0.1", "--correlations", "1", "--learning-rates", "0.05", "--steps", "300",
       "--eval-every", "10", "--batch-size", "64", "--width", "0.5", "--checkpoint-every", "0"]


def _entries(results):
    """Run entries without the one field allowed to differ after a resume."""
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in results["runs"]]


class _Crash(Exception):
    pass


def test_resume_from_unaligned_checkpoint_gives_identical_entries(tmp_path):
    full = train_and_evaluate(UNALIGNED, tmp_path / "full", progress=False)

    def crash_at_step_28(step, states, metrics):
        if step == 28:  # after the checkpoint at 20, with the losses of steps 15-20 pending
            raise _Crash

    with pytest.raises(_Crash):
        train_and_evaluate(UNALIGNED, tmp_path / "cut", observers=[crash_at_step_28], progress=False)
    streamed = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert [r["status"] for r in streamed["runs"]] == ["running", "running"]  # written during the chunk
    assert streamed["runs"][0]["steps"] == [7, 14, 21]  # the crash came before step 28's results
    resumed = train_and_evaluate(dataclasses.replace(UNALIGNED, resume=True), tmp_path / "cut", progress=False)
    assert resumed["resumed_from_step"] == 20 and full["resumed_from_step"] is None
    assert _entries(resumed) == _entries(full)  # train_loss included: the pending losses were saved
    assert [r["status"] for r in resumed["runs"]] == ["finished", "finished"]
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["20", "30", "40"]


def _wait_for_status(path: pathlib.Path, status: str, proc: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if path.exists():
            results = json.loads(path.read_text())
            if results["runs"] and results["runs"][0]["status"] == status and results["runs"][0]["steps"]:
                return results
        time.sleep(0.05)
    raise AssertionError(f"no {status!r} run in {path} after {timeout} s")


def _start(out, *extra):
    return subprocess.Popen([sys.executable, SCRIPT, *CLI, *extra, "--out", str(out)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    result = subprocess.run([sys.executable, SCRIPT, *CLI, "--out", str(out)], cwd=ROOT, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_the_step_reached_and_the_printed_command_resumes(tmp_path, uninterrupted, signum, code):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_status(out / "results.json", "running", proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr and "checkpoint saved" in stderr
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"][0]["status"] == "running"
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
    assert steps and 10 <= steps[-1] < 300  # no periodic checkpoints: this one was saved at the signal
    command = stderr.strip().splitlines()[-1]
    assert "--resume" in command and str(out) in command
    resumed = subprocess.run(shlex.split(command), cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["resumed_from_step"] == steps[-1]
    assert _entries(results) == _entries(uninterrupted)


def test_sigkill_at_any_moment_resumes_from_the_last_complete_checkpoint(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = _start(out, "--checkpoint-every", "3")  # frequent checkpoints: the kill lands in or near one
    _wait_for_status(out / "results.json", "running", proc)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    checkpoints = out / "checkpoints"
    complete = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert complete, "no checkpoint was written before the kill"
    # what a kill during a write leaves behind: a temporary directory for a later step
    (checkpoints / f"{complete[-1] + 1}.orbax-checkpoint-tmp-1234567").mkdir()
    resumed = subprocess.run([sys.executable, SCRIPT, *CLI, "--checkpoint-every", "3", "--out", str(out),
                              "--resume"], cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["resumed_from_step"] >= complete[-1]
    assert _entries(results) == _entries(uninterrupted)
    assert all(p.name.isdigit() for p in checkpoints.iterdir())  # the temporary directory is gone


def test_bad_settings_fail_before_overwrite_deletes_anything(tmp_path, uninterrupted):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(uninterrupted))
    # 0.95 of the 1437 images needs 1365 non-target images; digits has 1293
    result = subprocess.run([sys.executable, SCRIPT, *CLI, "--frequencies", "0.1,0.95", "--out", str(out),
                             "--overwrite"], cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "non-target images are free" in result.stderr
    assert json.loads((out / "results.json").read_text()) == uninterrupted
    result = subprocess.run([sys.executable, SCRIPT, *CLI, "--data-parallel", "3", "--out", str(out),
                             "--overwrite"], cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert result.returncode == 2 and "data_parallel=3 must divide" in result.stderr
    assert json.loads((out / "results.json").read_text()) == uninterrupted


def test_internal_errors_keep_their_traceback():
    from anatomy_jax.experiment.cli import run_main

    def broken(config, out):
        raise ValueError("a bug, not a bad setting")

    with pytest.raises(ValueError, match="a bug"):
        run_main(PatternRateConfig, "", broken, str, "x", argv=["--steps", "5"])


def test_a_diverged_first_run_neither_stops_the_chunk_nor_numbers_checkpoints_backwards(tmp_path):
    config = dataclasses.replace(UNALIGNED, correlations=(1.0,), learning_rates=(1e6, 0.05), steps=30,
                                 eval_every=10, checkpoint_every=10)
    results = train_and_evaluate(config, tmp_path, progress=False)
    diverged, ok = results["runs"]
    assert diverged["status"] == "diverged" and ok["status"] == "finished"
    assert ok["steps"] == [10, 20, 30]
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [10, 20, 30]
    alone = train_and_evaluate(dataclasses.replace(config, learning_rates=(0.05,)), tmp_path / "alone",
                               progress=False)
    assert alone["runs"][0]["train_loss"] == ok["train_loss"]  # the diverged run left it untouched
