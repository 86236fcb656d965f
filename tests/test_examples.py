"""Every script in ``examples/`` runs to completion, in quick mode, and produces what it promises.

The scripts run as a user would run them (``python examples/NAME.py`` in a fresh directory), with
``REPURPOSE_OPT_QUICK=1`` so that CI spends seconds, not minutes: each example reads it to shorten its
training or its time limits. A script added to ``examples/`` is picked up automatically and must at least
exit 0 without printing a traceback; the known ones have their output checked too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import repurpose_opt as ro

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def run_example(script: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(REPURPOSE_OPT_QUICK="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"restructure_sklearn.py", "partition_digits.py"}


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    run = run_example(script, tmp_path)
    assert run.returncode == 0, f"{script.name} exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    assert run.stdout.strip(), f"{script.name} printed nothing"
    check = CHECKS.get(script.name)
    if check is not None:
        check(run.stdout, tmp_path)


def _restructure_sklearn(stdout: str, folder: Path) -> None:
    lines = dict(line.split(": ", 1) for line in stdout.strip().splitlines())
    before, after = (float(v) for v in lines["volume"].split(" scalars")[0].split(" -> "))
    assert after < before, stdout
    sol = ro.load_solution(folder / "restructured-k4.npz")       # the solution it saved
    assert sol.status is ro.Status.FEASIBLE and sol.objective == after
    assert sol.guarantee is not None and sol.guarantee.within_tolerances
    assert f"{sol.guarantee.A:.3g}*||x||" in lines["guarantee"]
    assert np.all(sol.report.flops > 0)


def _partition_digits(stdout: str, folder: Path) -> None:
    assert "digits_mlp:keep=0.1:k=4" in stdout
    table = [line.split() for line in stdout.splitlines() if line.split()[:1] in (["direct"], ["munkres"], ["greedy"])]
    volumes = {row[0]: float(row[2]) for row in table}
    assert volumes["direct"] == 1006.0                            # the contiguous split of the pruned MLP
    assert volumes["munkres"] < volumes["direct"] and volumes["greedy"] < volumes["direct"]
    assert "best:" in stdout and "less than the direct split (1006)" in stdout


CHECKS = {"restructure_sklearn.py": _restructure_sklearn, "partition_digits.py": _partition_digits}

