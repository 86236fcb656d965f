"""The ``repurpose-opt`` command line, run in-process through ``main([...])``.

Properties checked:

- every sub-command runs and returns 0 on good input: demo, backends, simulate, compare, tradeoff and the
  runtime's export;
- bad input (a missing file, a corrupted file, a bad K, a bad assignment, an unwritable output) is one
  line ``error: ...`` on stderr with exit code 2 and no traceback; argparse errors exit 2 too;
- ``repurpose-opt backends`` imports no optional library (torch, matplotlib, solvers).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import repurpose_opt as ro
from repurpose_opt import zoo
from repurpose_opt.cli import main


def _one_line_error(capsys, *fragments: str, after_progress: bool = False) -> str:
    """The error is one line ``error: ...`` with every fragment; nothing else on stderr but progress lines."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert lines[-1].startswith("error: "), err
    assert sum(line.startswith("error:") for line in lines) == 1, err
    if after_progress:
        assert all(line.startswith("[") for line in lines[:-1]), err
    else:
        assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved network, a saved direct solution of it, a batch and placements, on a small random MLP."""
    root = tmp_path_factory.mktemp("saved")
    rng = np.random.default_rng(0)
    net = ro.Network([ro.Dense(rng.normal(size=(12, 8))), ro.ReLU(), ro.Dense(rng.normal(size=(6, 12))), ro.ReLU(),
                      ro.Dense(rng.normal(size=(4, 6)))], input_shape=(8,))
    cluster = ro.Cluster(k=2)
    sol = ro.solve(ro.PartitionProblem(net, cluster), backend="direct")
    paths = {
        "network": str(net.save(root / "net.npz")),
        "solution": str(ro.save_solution(sol, root / "sol.npz")),
        "input": str(root / "x.npy"),
        "assignment_json": str(root / "assignment.json"),
        "assignment_npz": str(root / "assignment.npz"),
    }
    np.save(paths["input"], rng.normal(size=(9, 8)))
    placement = [None, [0, 1] * 6, [1, 0] * 3, [0, 0, 1, 1]]
    (root / "assignment.json").write_text(json.dumps(placement))
    np.savez(paths["assignment_npz"], **{f"assignment{l}": np.asarray(p if p is not None else [-1] * 8)
                                         for l, p in enumerate(placement)})
    corrupted = root / "corrupted.npz"
    data = (root / "sol.npz").read_bytes()
    corrupted.write_bytes(data[: len(data) // 2])
    paths["corrupted"] = str(corrupted)
    return paths, net, cluster, sol, placement


# -------------------------------------------------------------------------------------------- basics
def test_no_command_unknown_command_and_version(capsys):
    assert main([]) == 2
    assert "usage: repurpose-opt" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"repurpose-opt {ro.__version__}"


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "backends", "simulate", "compare", "tradeoff", "export", "run", "calibrate-network"):
        assert command in out


# ------------------------------------------------------------------------------------------ backends
def test_backends_table_and_json(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    rows = ro.list_backends()
    for row in rows:
        assert row["name"] in out
    assert out.count("ready") == sum(row["available"] for row in rows)
    assert main(["backends", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == [r["name"] for r in rows]


def test_backends_names_the_extra_of_a_missing_backend(capsys, monkeypatch):
    from repurpose_opt.solvers import registry

    fake = [{"name": "ortools", "available": False, "missing": ["ortools"], "extra": "ortools",
             "problems": ["PartitionProblem"], "exact": True, "description": "CP-SAT"}]
    monkeypatch.setattr(registry, "list_backends", lambda available_only=False: fake)
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "pip install 'repurpose-opt[ortools]'" in out and "exact" in out


def test_backends_imports_no_optional_library():
    code = (
        "import sys; from repurpose_opt.cli import main; rc = main(['backends']); "
        "heavy = [m for m in ('torch', 'matplotlib', 'ortools', 'cvxpy', 'mtkahypar', 'highspy') if m in sys.modules]; "
        "print('HEAVY', heavy, rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY [] 0" in out


# ---------------------------------------------------------------------------------------------- demo
def test_demo_table_json_png_and_progress(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--out", str(out_dir)]) == 0
    captured = capsys.readouterr()
    for step in range(1, 7):
        assert f"[{step}/6]" in captured.err
    for label in ("volume [scalars/sample]", "bytes/sample", "FLOPs per worker", "params per worker",
                  "peak memory per worker", "latency per sample", "speedup vs 1 worker", "test accuracy",
                  "max calibration error", "certified test predictions", "direct parallel", "restructured (repurpose)"):
        assert label in captured.out
    assert "every placement that gives each worker a unit of every layer sends the same" in captured.out

    data = json.loads((out_dir / "demo.json").read_text())
    assert data["setting"]["k"] == 4 and data["setting"]["dense_network"] is True
    direct, partition, restructured = data["columns"]
    assert direct["volume"] == 1351.0  # 3·(256 + 128 + 64) + 7 gathered outputs, SPEC §2
    assert partition["volume"] >= direct["volume"] - direct["gather"]  # a dense network: no partition helps
    assert restructured["volume"] < direct["volume"] / 5
    g = restructured["guarantee"]
    assert g["max_calibration_error"] <= 0.05 + 1e-9 and g["A"] >= 0 and g["B"] >= 0
    assert 0.0 <= g["certified_fraction"] <= 1.0
    assert abs(restructured["test_accuracy"] - direct["test_accuracy"]) < 0.02
    for column in data["columns"]:
        assert len(column["flops_per_worker"]) == len(column["params_per_worker"]) == 4
    assert (out_dir / "demo_blocks.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("argv", "fragments", "after_progress"),
    [
        (["demo", "--k", "0"], ("`k` must be >= 1, got 0",), False),
        (["demo", "--tolerance", "-1"], ("`--tolerance` must be >= 0, got -1.0",), False),
        (["demo", "--calibration", "0"], ("`--calibration` must be >= 1, got 0",), False),
        (["demo", "--time-limit", "0"], ("`--time-limit` must be > 0, got 0.0",), False),
        # Known only once the model is loaded: after the first progress line, before any solve.
        (["demo", "--k", "11"], ("`cluster.k` = 11 is larger than layer 4, which has 10 units",), True),
        (["demo", "--calibration", "5000"], ("`--calibration` must be in 1..1257, got 5000",), True),
    ],
)
def test_demo_bad_parameters_are_one_line_errors(argv, fragments, after_progress, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    _one_line_error(capsys, *fragments, after_progress=after_progress)


def test_demo_non_integer_k_is_an_argparse_error(capsys):
    assert main(["demo", "--k", "four"]) == 2
    assert "argument --k: invalid int value: 'four'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ simulate
def test_simulate_solution_with_input_and_json(saved, tmp_path, capsys):
    paths, net, cluster, sol, _ = saved
    report_path = tmp_path / "report.json"
    assert main(["simulate", paths["solution"], "--input", paths["input"], "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert f"volume: {int(sol.report.comm_scalars)} scalars/sample" in out
    assert "bytes per link per sample" in out and "worker 1" in out and "executed 9 samples" in out
    data = json.loads(report_path.read_text())
    assert data["comm_scalars"] == sol.report.comm_scalars
    assert np.array_equal(np.asarray(data["link_bytes"]), sol.report.link_bytes)
    assert data["flops"] == sol.report.flops.tolist() and data["peak_activation"] == sol.report.peak_activation.tolist()
    assert data["max_abs_deviation_from_forward"] <= 1e-10


@pytest.mark.parametrize("kind", ["assignment_json", "assignment_npz"])
def test_simulate_network_with_an_assignment_file(saved, kind, capsys):
    paths, net, cluster, _, placement = saved
    assert main(["simulate", paths["network"], "--assignment", paths[kind], "--k", "2", "--output", "distributed"]) == 0
    expected = ro.simulate(net, placement, cluster, output="distributed")
    out = capsys.readouterr().out
    assert f"volume: {int(expected.comm_scalars)} scalars/sample" in out and "output distributed" in out


def test_simulate_network_defaults_to_the_direct_split(saved, tmp_path, capsys):
    paths, *_ , sol, _ = saved
    cluster_path = ro.Cluster(k=2).save(tmp_path / "cluster.json")
    assert main(["simulate", paths["network"], "--cluster", str(cluster_path)]) == 0
    out = capsys.readouterr().out
    assert "the direct contiguous split" in out and f"volume: {int(sol.report.comm_scalars)} scalars/sample" in out


def test_simulate_bad_inputs_are_one_line_errors(saved, tmp_path, capsys):
    paths, *_ = saved
    cases = [
        (["simulate", str(tmp_path / "missing.npz")], ("must be an existing .npz file", "missing.npz")),
        (["simulate", paths["corrupted"]], ("corrupted or truncated",)),
        (["simulate", paths["input"]], ("not a readable .npz file",)),
        (["simulate", paths["network"]], ("`--k` or `--cluster` is required",)),
        (["simulate", paths["network"], "--k", "0"], ("`k` must be >= 1, got 0",)),
        (["simulate", paths["solution"], "--input", str(tmp_path / "nope.npy")], ("`--input` must be an existing .npy file",)),
        (["simulate", paths["solution"], "--assignment", paths["input"]], ("not a readable .npz assignment",)),
    ]
    for argv, fragments in cases:
        assert main(argv) == 2, argv
        _one_line_error(capsys, *fragments)
    bad = tmp_path / "short.json"
    bad.write_text(json.dumps([None, [0, 1]]))
    assert main(["simulate", paths["network"], "--k", "2", "--assignment", str(bad)]) == 2
    _one_line_error(capsys, "`assignment` must hold 4 placements")
    out_of_range = tmp_path / "range.json"
    out_of_range.write_text(json.dumps([None, [0, 2] * 6, [0] * 6, [0] * 4]))
    assert main(["simulate", paths["network"], "--k", "2", "--assignment", str(out_of_range)]) == 2
    _one_line_error(capsys, "`assignment[1]` must hold worker indices in 0..1, got values in 0..2")
    wrong = tmp_path / "wrong_input.npy"
    np.save(wrong, np.zeros((3, 5)))
    assert main(["simulate", paths["solution"], "--input", str(wrong)]) == 2
    _one_line_error(capsys, "X")


# ------------------------------------------------------------------------------------- studies + runtime
def test_compare_command_writes_results(tmp_path, capsys):
    out_dir = tmp_path / "cmp"
    argv = ["compare", "--instances", "planted:units=6-6-4:k=2", "--backends", "bruteforce", "direct",
            "--time-limit", "5", "--seeds", "0", "1", "--out", str(out_dir), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "4 runs: 1 instances x 2 backends x 2 seeds" in out and "OPTIMAL" in out
    header = (out_dir / "compare.csv").read_text().splitlines()[0].split(",")
    assert header[:7] == ["instance", "problem", "units", "k", "backend", "seed", "status"]
    assert len(json.loads((out_dir / "compare.json").read_text())["rows"]) == 4


def test_compare_command_bad_input(tmp_path, capsys):
    assert main(["compare", "--instances", "planted:k=x", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "`k` must be an integer")
    assert main(["compare", "--instances", "planted:units=6-6-4:k=2", "--backends", "nosuch", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "unknown backend(s) ['nosuch']")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["compare", "--instances", "planted:units=6-6-4:k=2", "--backends", "direct", "--out", str(blocker),
                 "--no-progress"]) == 2
    _one_line_error(capsys, str(blocker))


def test_tradeoff_command_writes_results(tmp_path, capsys):
    out_dir = tmp_path / "tradeoff"
    argv = ["tradeoff", "--ks", "2", "--engines", "direct", "--tolerances", "0.3", "--calibration", "200",
            "--out", str(out_dir), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "direct-parallel" in out and "digits_mlp" in out
    rows = json.loads((out_dir / "tradeoff.json").read_text())
    assert {row["engine"] for row in rows} == {"direct-parallel", "direct"}
    assert (out_dir / "tradeoff.csv").exists()


def test_runtime_export_command_and_its_errors(saved, tmp_path, capsys):
    paths, *_ = saved
    assert main(["export", "--solution", paths["solution"], "--out", str(tmp_path / "export")]) == 0
    assert "exported" in capsys.readouterr().out
    assert main(["export", "--solution", paths["corrupted"], "--out", str(tmp_path / "e2")]) == 2
    _one_line_error(capsys, "corrupted")


def test_zoo_model_is_what_the_demo_loads():
    # The demo's volume figure (1351) depends on the zoo's architecture; pin it here too.
    assert zoo.load("digits_mlp").network.unit_counts == (64, 256, 128, 64, 10)


def test_readme_backend_table_matches_the_registry():
    # The README's table is hand-written for readers; it must say what the registry declares.
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    short = {"Partition": "PartitionProblem", "Restructure": "RestructureProblem", "Pruning": "PruningProblem"}
    documented = {}
    for line in readme.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if len(cells) == 5:
                name, _, problems, optimality, needs = cells
                kinds = {short[word.strip()] for word in problems.split("(")[0].split(",")}
                documented[name.strip("`")] = (kinds, optimality == "exact", None if needs == "core" else needs.strip("`[]"))
    registry = {row["name"]: (set(row["problems"]), row["exact"], row["extra"]) for row in ro.list_backends()}
    assert documented == registry
