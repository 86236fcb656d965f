"""The studies: instance generators, the comparison study and the shared progress bar.

Properties checked:

- pruning keeps exactly the largest ``ceil(keep·size)`` weights of every layer and nothing else;
- random networks have the density asked for and are reproducible per seed;
- planted networks hide a balanced placement that sends nothing, their units are really shuffled, and the
  exact oracle finds volume 0 on them;
- ``compare`` writes one row per (problem, backend, seed) with the documented columns to CSV and JSON,
  marks skipped and crashed backends instead of stopping, and refuses unknown backends up front;
- the progress bar draws in place on a terminal, a line per tenth of the work elsewhere, nothing when off.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import repurpose_opt as ro
from repurpose_opt import studies
from repurpose_opt.errors import InvalidParameterError, SolverError, UnknownBackendError
from repurpose_opt.studies.compare import COLUMNS, compare, format_summary, summarize
from repurpose_opt.studies.instances import (
    parse_instance,
    planted_network,
    prune_network,
    pruned_model,
    random_network,
)
from repurpose_opt.studies.progress import ProgressBar


# ------------------------------------------------------------------------------------------ pruning
def test_prune_network_keeps_exactly_the_largest_weights_per_layer():
    net = random_network((20, 30, 10), density=1.0, seed=3)
    pruned = prune_network(net, 0.15)
    for before, after in zip(net.linear_layers, pruned.linear_layers, strict=True):
        W, P = np.asarray(before.W), np.asarray(after.W)
        n_keep = math.ceil(0.15 * W.size)
        assert np.count_nonzero(P) == n_keep
        kept = P != 0
        assert np.array_equal(P[kept], W[kept])  # kept weights unchanged
        assert np.abs(W[kept]).min() >= np.abs(W[~kept]).max()  # and they are the largest ones
        assert np.array_equal(after.b, before.b)


def test_prune_network_keep_one_is_identity_and_bad_keep_is_refused():
    net = random_network((6, 5, 3), density=1.0, seed=0)
    assert all(np.array_equal(a.W, b.W) for a, b in zip(net.linear_layers, prune_network(net, 1.0).linear_layers, strict=True))
    with pytest.raises(InvalidParameterError, match=r"`keep` must be > 0, got 0.0"):
        prune_network(net, 0.0)
    with pytest.raises(InvalidParameterError, match=r"`keep` must be <= 1.0, got 1.5"):
        prune_network(net, 1.5)


def test_pruned_zoo_model_has_the_asked_density():
    net = pruned_model("digits_mlp", 0.1)
    assert net.unit_counts == (64, 256, 128, 64, 10)
    for layer in net.linear_layers:
        assert np.count_nonzero(layer.W) == math.ceil(0.1 * layer.W.size)


# ------------------------------------------------------------------------------------------- random
def test_random_network_density_shape_and_seed():
    a = random_network((100, 200, 50), density=0.1, seed=1)
    b = random_network((100, 200, 50), density=0.1, seed=1)
    c = random_network((100, 200, 50), density=0.1, seed=2)
    assert a.unit_counts == (100, 200, 50)
    assert abs(np.count_nonzero(a.linear_layers[0].W) / 20000 - 0.1) < 0.01
    assert np.array_equal(a.linear_layers[0].W, b.linear_layers[0].W)
    assert not np.array_equal(a.linear_layers[0].W, c.linear_layers[0].W)
    with pytest.raises(InvalidParameterError, match=r"`units` must list at least 2 layer sizes"):
        random_network((5,))
    with pytest.raises(InvalidParameterError, match=r"`density` must be > 0"):
        random_network((5, 5), density=0)


# ------------------------------------------------------------------------------------------ planted
@given(
    units=st.lists(st.integers(3, 12), min_size=2, max_size=4),
    k=st.integers(1, 3),
    density=st.sampled_from([0.2, 0.5, 1.0]),
    seed=st.integers(0, 1000),
)
def test_planted_network_hides_a_balanced_zero_volume_placement(units, k, density, seed):
    net, hidden = planted_network(units, k=k, density=density, seed=seed)
    assert net.unit_counts == tuple(units)
    problem = ro.PartitionProblem(net, ro.Cluster(k=k), input_placement="free", output="distributed")
    for placement, capacity in zip(hidden, problem.capacities, strict=True):
        assert np.all(np.bincount(placement, minlength=k) <= capacity)
    assert ro.simulate(net, list(hidden), problem.cluster, output="distributed").comm_scalars == 0.0
    for l, layer in enumerate(net.structure, start=1):
        M = layer.connectivity.toarray().astype(bool)
        assert M.any(axis=1).all()  # every unit reads something
        assert not np.any(M & (hidden[l][:, None] != hidden[l - 1][None, :]))  # only inside its block


def test_planted_units_are_shuffled_and_the_oracle_finds_zero():
    inst = parse_instance("planted:units=6-6-4:k=2:seed=3")
    direct = ro.solve(inst.problem, backend="direct")
    assert direct.objective > 0  # the hidden blocks are not the contiguous ones
    sol = ro.solve(inst.problem, backend="bruteforce")
    assert (sol.status, sol.objective) == (ro.Status.OPTIMAL, 0.0)
    assert ro.verify(inst.problem, sol).ok


def test_planted_is_not_recovered_by_a_random_placement_with_the_same_seed():
    # Regression: the generator once shared the random backend's stream, so seed 0 "found" the blocks.
    inst = parse_instance("planted:seed=0")
    assert ro.solve(inst.problem, backend="random", seed=0).objective > 0


def test_planted_network_refuses_blocks_larger_than_layers():
    with pytest.raises(InvalidParameterError, match=r"`units` must all be >= `k` \(4\)"):
        planted_network((8, 3, 8), k=4)


# -------------------------------------------------------------------------------------------- specs
def test_parse_instance_defaults_and_keys():
    inst = parse_instance("planted")
    assert inst.problem.network.unit_counts == (24, 24, 24, 12)
    assert (inst.problem.k, inst.problem.input_mode, inst.problem.output) == (3, "free", "distributed")
    assert inst.planted is not None
    inst = parse_instance("random:units=10-20-5:density=30%:k=2:output=distributed:imbalance=0.1")
    assert inst.problem.network.unit_counts == (10, 20, 5)
    assert (inst.problem.k, inst.problem.input_mode, inst.problem.output, inst.problem.imbalance) == (2, "replicated", "distributed", 0.1)
    inst = parse_instance("digits_mlp:keep=5%:k=8")
    assert inst.problem.k == 8 and inst.planted is None
    assert np.count_nonzero(inst.problem.network.linear_layers[0].W) == math.ceil(0.05 * 64 * 256)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonsense", r"`instance` kind must be one of digits_mlp, digits_cnn, mnist1d_mlp, random, planted, got 'nonsense'"),
        ("planted:keep=0.1", r"`instance` key 'keep' is not valid for 'planted'; valid keys: units, density, seed"),
        ("planted:k", r"`instance` fields must look like key=value, got 'k'"),
        ("planted:k=two", r"`k` must be an integer in 'planted:k=two', got 'two'"),
        ("random:density=lots", r"`density` must be a number in 'random:density=lots', got 'lots'"),
        ("random:units=10-x", r"`units` must be sizes joined by '-', like 64-128-10, got '10-x'"),
        ("random:input=sideways", r"`input` must be one of 'replicated', 'free', got 'sideways'"),
        ("", r"`instance` must be a spec like"),
    ],
)
def test_parse_instance_bad_specs(spec, message):
    with pytest.raises(InvalidParameterError, match=message):
        parse_instance(spec)


# ------------------------------------------------------------------------------------------ compare
def _tiny():
    return [parse_instance("planted:units=6-6-4:k=2"), parse_instance("random:units=8-8-4:density=0.4:k=2")]


def test_compare_rows_files_and_columns(tmp_path):
    rows = compare(_tiny(), ["bruteforce", "direct", "random"], time_limit=5, seeds=[0, 1], out_dir=tmp_path,
                   progress=False)
    assert len(rows) == 2 * 3 * 2
    assert all(tuple(row) == COLUMNS for row in rows)
    for row in rows:
        assert row["status"] in ("OPTIMAL", "FEASIBLE")
        assert row["verified"] is True
        assert row["volume"] == pytest.approx(sum(row["comm_per_layer"]) + row["gather"])
        assert row["best_volume"] == min(r["volume"] for r in rows if r["instance"] == row["instance"])
        assert row["vs_direct"] == pytest.approx(row["volume"] / row["direct_volume"])
        assert row["wall_time"] > 0
    oracle = [r for r in rows if r["backend"] == "bruteforce"]
    assert all(r["status"] == "OPTIMAL" and r["volume"] == r["bound"] == r["best_volume"] for r in oracle)
    assert oracle[0]["volume"] == 0.0  # the planted instance

    with open(tmp_path / "compare.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == COLUMNS and len(table) == len(rows)
    assert json.loads(table[0]["comm_per_layer"]) == rows[0]["comm_per_layer"]
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["meta"]["backends"] == ["bruteforce", "direct", "random"] and data["meta"]["seeds"] == [0, 1]
    assert len(data["rows"]) == len(rows)
    assert (tmp_path / "compare_time.png").stat().st_size > 0
    assert (tmp_path / "compare_layers.png").stat().st_size > 0

    summary = summarize(rows)
    assert len(summary) == 2 * 3 and all(s["runs"] == 2 for s in summary)
    text = format_summary(summary)
    assert "planted:units=6-6-4:k=2" in text and "bruteforce" in text and "OPTIMAL" in text


def test_compare_skips_backends_that_cannot_run_and_records_crashes(monkeypatch):
    from repurpose_opt.solvers.random_placement import RandomBackend

    def crash(self, problem, **kwargs):
        raise RuntimeError("native library exploded")

    monkeypatch.setattr(RandomBackend, "solve", crash)
    big = parse_instance("planted:units=30-30-30:k=3")
    rows = compare({"big": big.problem}, ["bruteforce", "random", "direct"], time_limit=5, seeds=[0], progress=False)
    by_backend = {r["backend"]: r for r in rows}
    assert by_backend["bruteforce"]["status"] == "SKIPPED"
    assert "too large for exhaustive enumeration" in by_backend["bruteforce"]["message"]
    assert by_backend["random"]["status"] == "ERROR"
    assert "SolverError" in by_backend["random"]["message"] and "native library exploded" in by_backend["random"]["message"]
    assert by_backend["direct"]["status"] == "FEASIBLE"
    assert by_backend["direct"]["best_volume"] == by_backend["direct"]["volume"]  # skipped/crashed runs count for nothing


def test_compare_ratio_to_a_zero_best_is_written_as_standard_json(tmp_path):
    rows = compare(_tiny()[:1], ["bruteforce", "direct"], seeds=[0], out_dir=tmp_path, progress=False)
    assert rows[1]["vs_best"] == math.inf
    text = (tmp_path / "compare.json").read_text()
    assert "Infinity" not in text and json.loads(text)["rows"][1]["vs_best"] == "inf"


def test_compare_accepts_names_pairs_and_bare_problems():
    problem = _tiny()[0].problem
    rows = compare([("mine", problem), problem], ["direct"], seeds=[0], progress=False)
    assert [r["instance"] for r in rows] == ["mine", "problem1"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"backends": ["direct", "nosuch"]}, UnknownBackendError, r"unknown backend\(s\) \['nosuch'\]; known backends: "),
        ({"backends": "direct"}, InvalidParameterError, r"`backends` must be a non-empty list of backend names"),
        ({"time_limit": -1}, InvalidParameterError, r"`time_limit` must be > 0, got -1.0"),
        ({"seeds": []}, InvalidParameterError, r"`seeds` must be a non-empty list of integers >= 0"),
        ({"seeds": [-2]}, InvalidParameterError, r"`seeds` must be >= 0, got -2"),
        ({"problems": []}, InvalidParameterError, r"`problems` must not be empty"),
        ({"problems": [1, 2]}, InvalidParameterError, r"`problems` must hold PartitionProblem or RestructureProblem objects, got int"),
        ({"problems": 7}, InvalidParameterError, r"`problems` must be a mapping name -> problem or a list of problems, got int"),
    ],
)
def test_compare_bad_arguments(kwargs, error, message):
    arguments = {"problems": _tiny()[:1], "backends": ["direct"], "time_limit": 1.0, "seeds": [0]}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        compare(**arguments, progress=False)


def test_compare_is_reexported_as_the_function():
    assert studies.compare is compare
    assert callable(studies.tradeoff)
    assert issubclass(SolverError, ro.RepurposeError)


# ----------------------------------------------------------------------------------------- progress
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_modes():
    log = io.StringIO()
    with ProgressBar(100, "study", stream=log) as bar:
        for _ in range(100):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1]  # the first step, then each tenth.startswith("study 100/100 (100%)")

    terminal = _Terminal()
    with ProgressBar(3, "study", stream=terminal) as bar:
        for _ in range(3):
            bar.update(1, note="step")
    assert terminal.getvalue().count("\r") == 3 and terminal.getvalue().endswith("\n")
    assert "study 3/3 (100%)" in terminal.getvalue() and "step" in terminal.getvalue()

    quiet = io.StringIO()
    with ProgressBar(5, stream=quiet, enabled=False) as bar:
        bar.update(5)
    assert quiet.getvalue() == "" and bar.count == 5
