"""The runtime: export shards, torch.distributed execution, calibration and the CLI commands.

Properties checked:

- a distributed run's outputs equal the simulator's (float32 tolerance) and the bytes it hands to
  ``isend`` on every link in every layer equal the simulator's ``link_bytes`` times the batch, exactly,
  for dense and conv models, K = 2, 3, 4, every input placement and output mode, direct split and
  restructured model;
- an export holds, per worker, only its own rows and the columns it reads, and its in-process execution
  equals the simulator's;
- every kind of damage to an export is a FormatError naming the problem;
- a worker that dies, raises or hangs ends the run with RuntimeFailure within the timeout.

Workers are forked from a forkserver with torch preloaded, so after the first run each run costs a
fraction of a second; each configuration is one ``run_distributed`` call.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest

import repurpose_opt as ro
from repurpose_opt.runtime import (
    RuntimeFailure,
    calibrate_network,
    compare_latency,
    export,
    load_export,
    predicted_times,
    run_distributed,
)
from repurpose_opt.runtime._worker import FAULT_ENV
from repurpose_opt.runtime.commands import register

pytest.importorskip("torch")

N_SAMPLES = 7


def _dense_model():
    rng = np.random.default_rng(1)
    W1 = rng.normal(size=(12, 8)) / 3 * (rng.random((12, 8)) < 0.7)
    W2 = rng.normal(size=(10, 12)) / 3.5 * (rng.random((10, 12)) < 0.6)
    net = ro.Network(
        [ro.Dense(W1, 0.1 * rng.normal(size=12)), ro.ReLU(), ro.Dense(W2, 0.1 * rng.normal(size=10)), ro.Tanh(),
         ro.Dense(rng.normal(size=(6, 10)) / 3, 0.1 * rng.normal(size=6))],
        input_shape=(8,),
    )
    return net, rng.normal(size=(60, 8))


def _conv_model():
    rng = np.random.default_rng(2)
    net = ro.Network(
        [
            ro.Conv2d(rng.normal(size=(6, 4, 3, 3)) / 5, 0.1 * rng.normal(size=6), padding=1),
            ro.ReLU(),
            ro.MaxPool2d(2),
            ro.Conv2d(rng.normal(size=(5, 6, 3, 3)) / 6, 0.1 * rng.normal(size=5), padding=1),
            ro.Sigmoid(),
            ro.AvgPool2d(2, stride=1),
            ro.Flatten(),
            ro.Dense(rng.normal(size=(4, 20)) / 3, 0.1 * rng.normal(size=4)),
        ],
        input_shape=(4, 6, 6),
    )
    return net, rng.normal(size=(40, 4, 6, 6))


MODELS = {"dense": _dense_model(), "conv": _conv_model()}
_SOLUTIONS: dict = {}


def _input_placement(mode, net, k):
    if mode == "fixed":
        n0 = net.unit_counts[0]
        return np.random.default_rng(k).integers(0, k, n0)
    return mode


def _solution(model, k, input_mode, output, kind):
    key = (model, k, input_mode, output, kind)
    if key not in _SOLUTIONS:
        net, X = MODELS[model]
        placement = _input_placement(input_mode, net, k)
        if kind == "direct":
            problem = ro.PartitionProblem(net, ro.Cluster(k=k), input_placement=placement, output=output)
            solution = ro.solve(problem, backend="direct")
        else:
            problem = ro.RestructureProblem(net, ro.Cluster(k=k), calibration=X, tolerance=0.1,
                                            input_placement=placement, output=output)
            solution = ro.solve(problem, backend="repurpose")
        assert solution.status.has_solution, solution.message
        _SOLUTIONS[key] = solution
    return _SOLUTIONS[key]


def _batch(model):
    return MODELS[model][1][:N_SAMPLES]


def _assert_matches_simulator(solution, X, result):
    """Outputs equal the simulator's worker-by-worker execution; bytes equal its message sizes exactly.

    In a partial run (``ranks``), only what the local workers saw is compared: the links with one end
    here and the outputs they hold (NaN elsewhere).
    """
    report = ro.simulate(solution.network, solution.assignment, solution.cluster, X=X, output=solution.output)
    reference = report.outputs
    # the simulator itself executes the restructured network (checked here so a mismatch is located)
    np.testing.assert_allclose(reference, solution.network.forward(X), rtol=1e-10, atol=1e-10)
    scale = max(1.0, float(np.abs(reference).max()))
    held = ~np.isnan(result.outputs)
    if result.complete:
        assert held.all()
    np.testing.assert_allclose(result.outputs[held], reference[held], rtol=1e-4, atol=1e-5 * scale)
    n = X.shape[0]
    assert result.link_bytes.shape == report.link_bytes.shape
    known = np.broadcast_to(result.known_links(), report.link_bytes.shape)
    np.testing.assert_array_equal(result.link_bytes[known], n * report.link_bytes[known])
    assert np.all(result.link_bytes[~known] == 0)
    if result.complete:
        np.testing.assert_array_equal(result.gather_bytes, n * report.gather_bytes)
        np.testing.assert_array_equal(result.bytes_per_layer, n * report.comm_per_layer * report.dtype_bytes)
        assert result.comm_bytes == n * report.comm_bytes
    return held


# ------------------------------------------------------------------------------------ agreement
CONFIGS = [
    (model, k, input_mode, output, kind)
    for model in ("dense", "conv")
    for k in (2, 3, 4)
    for input_mode in ("replicated", "free", "fixed")
    for output in ("gather", "distributed")
    for kind in ("direct", "restructured")
]


@pytest.mark.parametrize("model,k,input_mode,output,kind", CONFIGS)
def test_distributed_run_matches_the_simulator_exactly(model, k, input_mode, output, kind):
    solution = _solution(model, k, input_mode, output, kind)
    X = _batch(model)
    result = run_distributed(solution, X, timeout=60)
    assert result.k == k and result.n_samples == N_SAMPLES
    _assert_matches_simulator(solution, X, result)
    assert result.layer_times.shape == (solution.network.n_layers,) and np.all(result.layer_times > 0)
    assert result.worker_layer_times.shape == (k, solution.network.n_layers)
    assert result.total_time >= result.layer_times.max()


def test_the_docstring_example_of_run_distributed():
    net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(np.ones((2, 4)))], input_shape=(4,))
    sol = ro.solve(ro.PartitionProblem(net, ro.Cluster(k=2)), backend="direct")
    result = run_distributed(sol, np.array([[1.0, -2.0, 3.0, 4.0]]))
    assert (result.outputs.tolist(), result.link_bytes.sum(axis=(1, 2)).tolist()) == ([[8.0, 8.0]], [0, 16])


def test_restructured_models_communicate_less_and_really_send_less():
    for model in ("dense", "conv"):
        direct = _solution(model, 4, "replicated", "gather", "direct")
        restructured = _solution(model, 4, "replicated", "gather", "restructured")
        assert restructured.report.comm_scalars < direct.report.comm_scalars


def test_synchronized_repeated_run_from_an_export_directory(tmp_path):
    solution = _solution("conv", 3, "free", "gather", "restructured")
    X = _batch("conv")
    directory = export(solution, tmp_path / "export")
    result = run_distributed(directory, X, world_size=3, synchronize=True, repeats=3, warmup=1)
    assert result.synchronized and result.repeats == 3
    _assert_matches_simulator(solution, X, result)


def test_float64_export_runs_float64_on_the_wire(tmp_path):
    solution = _solution("dense", 2, "free", "distributed", "direct")
    X = _batch("dense")
    result = run_distributed(export(solution, tmp_path / "e", dtype="float64"), X)
    report = ro.simulate(solution.network, solution.assignment, solution.cluster, X=X, output=solution.output)
    np.testing.assert_allclose(result.outputs, report.outputs, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(result.link_bytes, 2 * X.shape[0] * report.link_bytes)  # 8 bytes per scalar


def test_spawned_workers_give_the_same_run():
    solution = _solution("conv", 2, "free", "distributed", "direct")
    X = _batch("conv")
    result = run_distributed(solution, X, start_method="spawn", timeout=120)
    _assert_matches_simulator(solution, X, result)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_tcp_and_env_rendezvous_on_loopback(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    solution = _solution("dense", 3, "fixed", "gather", "restructured")
    X = _batch("dense")
    url = f"tcp://{os.environ['MASTER_ADDR']}:{_free_port()}"
    result = run_distributed(solution, X, init_method=url, timeout=60)
    assert result.init_method == url and result.complete
    _assert_matches_simulator(solution, X, result)
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    result = run_distributed(solution, X, init_method="env://", timeout=60)
    _assert_matches_simulator(solution, X, result)


def _on_two_hosts(solution, X, ranks_a, ranks_b, init_method):
    """Two callers, as on two hosts, each starting its own ranks of one process group."""
    results, errors = {}, []

    def host(name, ranks):
        try:
            results[name] = run_distributed(solution, X, init_method=init_method, ranks=ranks, timeout=60)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=host, args=("a", ranks_a)), threading.Thread(target=host, args=("b", ranks_b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]
    return results["a"], results["b"]


def test_several_hosts_each_starting_its_own_ranks(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    # gather: the sink's host gets every output, the other host none; bytes of every link are seen
    solution = _solution("dense", 3, "fixed", "gather", "restructured")
    X = _batch("dense")
    report = ro.simulate(solution.network, solution.assignment, solution.cluster, X=X, output="gather")
    a, b = _on_two_hosts(solution, X, [0], [2, 1], f"tcp://127.0.0.1:{_free_port()}")
    assert (a.ranks, b.ranks) == ((0,), (1, 2)) and not a.complete
    assert _assert_matches_simulator(solution, X, a).all()
    assert not _assert_matches_simulator(solution, X, b).any()
    np.testing.assert_array_equal(np.maximum(a.link_bytes, b.link_bytes), X.shape[0] * report.link_bytes)
    np.testing.assert_array_equal(a.gather_bytes, X.shape[0] * report.gather_bytes)
    assert np.isnan(a.setup_times[1:]).all() and np.isnan(b.setup_times[0])
    # distributed outputs: each host holds its workers' units; together, all of them
    solution = _solution("conv", 4, "free", "distributed", "restructured")
    X = _batch("conv")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    a, b = _on_two_hosts(solution, X, [1, 3], [0, 2], "env://")
    held_a = _assert_matches_simulator(solution, X, a)
    held_b = _assert_matches_simulator(solution, X, b)
    assert not (held_a & held_b).any() and (held_a | held_b).all()


# ------------------------------------------------------------------------------------------ faults
@pytest.mark.parametrize("spec,expected", [
    ("1:1:exit", r"^distributed run failed: worker 1 died with exit code 1 in layer 1"),
    ("1:2:raise", r"^distributed run failed: worker 1 failed in layer 2: RuntimeError: fault injected"),
    ("2:0:exit", r"^distributed run failed: worker 2 died with exit code 1 in start-up"),
])
def test_a_dying_worker_ends_the_run_with_a_clear_error(monkeypatch, spec, expected):
    monkeypatch.setenv(FAULT_ENV, spec)
    solution = _solution("dense", 3, "free", "gather", "direct")
    started = time.monotonic()
    with pytest.raises(RuntimeFailure, match=expected) as info:
        run_distributed(solution, _batch("dense"), timeout=20)
    assert time.monotonic() - started < 20
    assert "all workers were stopped" in str(info.value)
    assert isinstance(info.value, ro.RepurposeError) and isinstance(info.value, RuntimeError)


def test_a_hanging_worker_ends_the_run_at_the_timeout(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "0:2:hang")
    solution = _solution("dense", 2, "replicated", "gather", "direct")
    started = time.monotonic()
    with pytest.raises(RuntimeFailure, match=r"timed out after 3 s: 2 of 2 workers still running \(worker 0 in layer 2, worker 1 waiting for messages in layer 2\)"):
        run_distributed(solution, _batch("dense"), timeout=3)
    assert time.monotonic() - started < 3 + 5


def test_a_dying_worker_ends_the_calibration_with_a_clear_error(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "1:0:exit")
    with pytest.raises(RuntimeFailure, match=r"^distributed run failed: worker 1 died with exit code 1 in start-up"):
        calibrate_network(2, matmul_size=16, repeats=1, pingpongs=1, timeout=20)


def test_bad_arguments_are_refused_before_anything_starts(tmp_path):
    solution = _solution("dense", 2, "replicated", "gather", "direct")
    X = _batch("dense")
    with pytest.raises(ro.InvalidParameterError, match="`world_size` must equal the export's number of workers"):
        run_distributed(solution, X, world_size=3)
    with pytest.raises(ro.InvalidParameterError, match="`init_method` must be"):
        run_distributed(solution, X, init_method="http://example.org")
    with pytest.raises(ro.InvalidParameterError, match=r"`X` must have shape \(N, 8\)"):
        run_distributed(solution, np.ones((3, 5)))
    with pytest.raises(ro.InvalidParameterError, match="`timeout` must be > 0"):
        run_distributed(solution, X, timeout=0)
    with pytest.raises(ro.InvalidParameterError, match="`solution_or_export_dir` must be"):
        run_distributed(42, X)
    with pytest.raises(ro.FormatError, match="no manifest.json"):
        run_distributed(tmp_path, X)
    with pytest.raises(ro.InvalidParameterError, match=r"`ranks` must hold distinct worker ranks in 0..1"):
        run_distributed(solution, X, ranks=[0, 2])
    with pytest.raises(ro.InvalidParameterError, match=r"`init_method` must be 'tcp://HOST:PORT' or 'env://' when `ranks`"):
        run_distributed(solution, X, ranks=[1])


# ------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("model", ["dense", "conv"])
@pytest.mark.parametrize("input_mode", ["replicated", "fixed"])
def test_export_holds_only_each_workers_units_and_executes_like_the_simulator(tmp_path, model, input_mode):
    solution = _solution(model, 3, input_mode, "gather", "restructured")
    net = solution.network
    loaded = load_export(export(solution, tmp_path / "e"))
    X = MODELS[model][1][:20]
    report = ro.simulate(net, solution.assignment, solution.cluster, X=X, output="gather")
    np.testing.assert_allclose(loaded.execute(X), report.outputs, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(loaded.link_scalars() * 4, report.link_bytes)
    np.testing.assert_array_equal(loaded.gather_scalars() * 4, report.gather_bytes)
    for l, (plan, layer, structure) in enumerate(zip(loaded.layers, net.linear_layers, net.structure, strict=True), start=1):
        blocks = layer.W.reshape(structure.n_units, structure.n_inputs, -1)
        for rank in range(3):
            rows = np.flatnonzero(solution.assignment[l] == rank)
            needed = np.flatnonzero(structure.connectivity[rows].toarray().any(axis=0)) if rows.size else np.zeros(0, int)
            np.testing.assert_array_equal(plan.owned[rank], rows)
            np.testing.assert_array_equal(plan.reads[rank], needed)  # only the columns its rows read
            W = loaded.shards[rank][f"W{l}"]
            np.testing.assert_array_equal(W.reshape(blocks[rows][:, needed].shape), blocks[rows][:, needed].astype(np.float32))
            np.testing.assert_array_equal(loaded.shards[rank][f"b{l}"], layer.b[rows].astype(np.float32))


def test_a_worker_loads_only_its_shard(tmp_path):
    solution = _solution("dense", 3, "free", "gather", "direct")
    directory = export(solution, tmp_path / "e")
    (directory / "worker2.npz").unlink()  # worker 1 does not need it
    assert set(load_export(directory, workers=[1]).shards) == {1}
    with pytest.raises(ro.FormatError, match="shard of worker 2"):
        load_export(directory)


def test_exporting_a_solution_without_placement_is_refused(tmp_path):
    net, X = MODELS["dense"]
    problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=X, comm_budget=0.0)
    solution = ro.solve(problem, backend="repurpose")
    if solution.status.has_solution:  # pragma: no cover - depends on the engine; build a failed one
        solution = ro.Solution(status=ro.Status.INFEASIBLE, objective=None, bound=None, gap=None, backend="x",
                               assignment=None, network=None, cluster=ro.Cluster(k=2))
    with pytest.raises(ro.InvalidParameterError, match="`solution` must hold a placement"):
        export(solution, tmp_path / "e")
    with pytest.raises(ro.InvalidParameterError, match="`solution` must be a repurpose_opt.Solution"):
        export("nope", tmp_path / "e")


def _edit_manifest(directory, change):
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _first_message(manifest):
    for layer in manifest["layers"]:
        for rank, sends in enumerate(layer["send"]):
            if sends:
                return layer, rank, sends[0]
    raise AssertionError("no message in this export")


def _corruptions():
    def drop_sent_unit(m):
        layer, rank, pair = _first_message(m)
        pair[1] = pair[1][1:] if len(pair[1]) > 1 else pair[1] + [max(pair[1]) + 1]

    def drop_receive(m):
        layer, rank, pair = _first_message(m)
        dst = pair[0]
        layer["recv"][dst] = [p for p in layer["recv"][dst] if p[0] != rank]
        layer["send"][rank] = [p for p in layer["send"][rank] if p[0] != dst]

    def duplicate_owner(m):
        owned = m["layers"][0]["owned"]
        owned[1] = sorted(set(owned[1]) | {owned[0][0]})

    def sender_does_not_hold(m):
        layer, rank, pair = _first_message(m)
        dst = pair[0]
        index = m["layers"].index(layer)
        owners = m["layers"][index - 1]["owned"] if index else None
        foreign = owners[dst][0] if owners else m["input"]["placement"].index(dst)
        pair[1] = [foreign]  # a unit of the destination itself, in the send and its mirrored receive
        for p in layer["recv"][dst]:
            if p[0] == rank:
                p[1] = [foreign]

    return {
        "newer version": (lambda m: m.update(version=99), "format version 99.*upgrade"),
        "wrong format": (lambda m: m.update(format="something/else"), "expected a 'repurpose-opt/export' manifest"),
        "send without matching receive": (drop_sent_unit, "receive list does not match|neither holds nor receives|receives unit"),
        "missing message": (drop_receive, "neither holds nor receives"),
        "unit owned twice": (duplicate_owner, "owned by 2 workers"),
        "sender does not hold the unit": (sender_does_not_hold, "does not hold it"),
        "bad dtype": (lambda m: m.update(dtype="int8"), "dtype must be one of"),
        "gather list": (lambda m: m["output"].update(gather=[]), "gather list must send every output unit"),
        "input shape": (lambda m: m["input"].update(shape=[9]), "do not match its shape"),
        "post op": (lambda m: m["layers"][0]["post"].append({"type": "softmax"}), "post op 1 must be one of"),
    }


@pytest.mark.parametrize("name", list(_corruptions()))
def test_an_inconsistent_manifest_is_a_format_error(tmp_path, name):
    change, message = _corruptions()[name]
    solution = _solution("dense", 3, "free", "gather", "direct")
    directory = export(solution, tmp_path / "e")
    _edit_manifest(directory, change)
    with pytest.raises(ro.FormatError, match=message):
        load_export(directory)


def test_damaged_files_are_format_errors(tmp_path):
    solution = _solution("dense", 2, "free", "gather", "restructured")
    directory = export(solution, tmp_path / "e")
    other = export(_solution("dense", 2, "free", "gather", "direct"), tmp_path / "other")

    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    (broken / "manifest.json").write_text((directory / "manifest.json").read_text()[:-20])
    with pytest.raises(ro.FormatError, match="not valid JSON"):
        load_export(broken)

    shutil.rmtree(broken)
    shutil.copytree(directory, broken)
    data = bytearray((broken / "worker1.npz").read_bytes())
    data[data.find(b"\x93NUMPY") + 12] ^= 0xFF  # inside an array member (a zip's local-header sizes go unread)
    (broken / "worker1.npz").write_bytes(bytes(data))
    with pytest.raises(ro.FormatError, match="worker1.npz"):
        load_export(broken)

    shutil.rmtree(broken)
    shutil.copytree(directory, broken)
    shutil.copy(other / "worker0.npz", broken / "worker0.npz")
    with pytest.raises(ro.FormatError, match="does not belong to this export"):
        load_export(broken)

    shutil.rmtree(broken)
    shutil.copytree(directory, broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(ro.FormatError, match="no manifest.json"):
        load_export(broken)
    with pytest.raises(ro.FormatError, match="must be an existing export directory"):
        load_export(tmp_path / "nowhere")


# -------------------------------------------------------------------------------------- calibration
def test_predicted_times_for_one_sample_are_the_simulators_latency():
    solution = _solution("conv", 3, "free", "gather", "restructured")
    cluster = ro.Cluster(k=3, flop_rate=2e9, bandwidth=np.full((3, 3), 5e7), latency=np.array([[0, 1e-4, 2e-4], [1e-4, 0, 3e-4], [2e-4, 3e-4, 0]]))
    report = ro.simulate(solution.network, solution.assignment, cluster, output="gather")
    layers, gather = predicted_times(report, cluster, 1)
    np.testing.assert_allclose(layers, report.latency_per_layer, rtol=1e-12)
    assert gather == pytest.approx(report.gather_latency)
    layers_256, _ = predicted_times(report, cluster, 256)
    assert np.all(layers_256 >= layers)


def test_calibrate_network_writes_a_cluster_the_other_commands_accept(tmp_path):
    calibration = calibrate_network(2, out=tmp_path / "cluster.json", matmul_size=64, repeats=3, pingpongs=3)
    cluster = ro.Cluster.load(tmp_path / "cluster.json")
    assert cluster.k == 2
    np.testing.assert_allclose(cluster.latency, calibration.alpha)
    np.testing.assert_allclose(cluster.bandwidth, calibration.beta)
    assert calibration.alpha[0, 1] > 0 and calibration.beta[0, 1] > 0 and np.all(calibration.flop_rates > 0)
    assert calibration.alpha[0, 1] == calibration.alpha[1, 0]
    # the calibrated cluster drives the solvers and the simulator like any other
    net, _ = MODELS["dense"]
    solution = ro.solve(ro.PartitionProblem(net, cluster), backend="direct")
    comparison = compare_latency(solution, _batch("dense"), cluster, repeats=2, warmup=1)
    assert comparison.measured.shape == comparison.predicted.shape == (net.n_layers,)
    assert np.all(comparison.measured > 0) and np.all(np.isfinite(comparison.relative_error))
    assert "total" in comparison.table() and "alpha" in calibration.table()


# ---------------------------------------------------------------------------------------------- CLI
def _parser():
    parser = argparse.ArgumentParser(prog="repurpose-opt")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_export_and_run(tmp_path, capsys):
    solution = _solution("conv", 2, "replicated", "distributed", "restructured")
    ro.save_solution(solution, tmp_path / "sol.npz")
    X = _batch("conv")
    np.save(tmp_path / "data.npy", X)
    parser = _parser()
    args = parser.parse_args(["export", "--solution", str(tmp_path / "sol.npz"), "--out", str(tmp_path / "exp")])
    assert args.handler(args) == 0
    assert "units per worker" in capsys.readouterr().out
    args = parser.parse_args(["run", "--export", str(tmp_path / "exp"), "--input", str(tmp_path / "data.npy"),
                              "--output", str(tmp_path / "out.npy")])
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "bytes sent match the manifest's plan exactly" in printed and "gather" in printed
    report = ro.simulate(solution.network, solution.assignment, solution.cluster, X=X, output="distributed")
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), report.outputs, rtol=1e-4, atol=1e-5)
    args = parser.parse_args(["run", "--export", str(tmp_path / "exp"), "--input", str(tmp_path / "missing.npy")])
    with pytest.raises(ro.FormatError, match="must be an existing .npy file"):
        args.handler(args)
    args = parser.parse_args(["run", "--export", str(tmp_path / "exp"), "--input", str(tmp_path / "data.npy"), "--ranks", "0,x"])
    with pytest.raises(ro.InvalidParameterError, match="`--ranks` must be comma-separated worker ranks"):
        args.handler(args)


def test_cli_calibrate_network(tmp_path, capsys):
    args = _parser().parse_args(["calibrate-network", "--k", "2", "--out", str(tmp_path / "cluster.json"),
                                 "--matmul-size", "32", "--pingpongs", "2"])
    assert args.handler(args) == 0
    assert "alpha [us]" in capsys.readouterr().out
    assert ro.Cluster.load(tmp_path / "cluster.json").k == 2
    args = _parser().parse_args(["calibrate-network", "--out", str(tmp_path / "c.json"), "--solution", "sol.npz"])
    with pytest.raises(ro.InvalidParameterError, match="`--solution` and `--input` must be given together"):
        args.handler(args)
