"""The simulator: worker-by-worker execution and SPEC §2's meters.

Properties checked (hypothesis, deterministic "ci" profile, dense and conv networks, random placements,
every input mode and both output modes):
- the outputs computed worker by worker from the messages alone equal ``Network.forward`` (float64, 1e-10);
- every figure equals a plain-loop recount of the SPEC formulas (volume per layer and per link, gather,
  FLOPs, parameters, peak activation memory, α-β latency with the gather step, speedup);
- total FLOPs and parameters do not depend on the placement; K = 1 sends nothing;
- renaming identical workers (keeping the sink 0 when outputs are gathered) changes no total and permutes
  the per-link bytes;
- the volume never exceeds Σ_l s_{l-1}·n_{l-1}·(K−1) plus the gather s_L·n_L;
and, worked out by hand: volumes, link bytes, messages, FLOPs, memory and latency for a dense network and
for a conv → maxpool → flatten → dense network in the replicated, free and fixed input modes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import repurpose_opt as ro
from repurpose_opt import simulator as simulator_module
from repurpose_opt.testing import random_conv_network, random_dense_network, relabel_workers


# ----------------------------------------------------------------------------------------- strategies
@st.composite
def placed_networks(draw, identical: bool = False):
    """(network, assignment, cluster, input_placement, output): any valid placement, balanced or not."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(1, 4))
    if draw(st.booleans()):
        sizes = [draw(st.integers(1, 6)) for _ in range(draw(st.integers(2, 4)))]
        net = random_dense_network(rng, sizes, density=draw(st.sampled_from([0.2, 0.5, 1.0])),
                                   activation=draw(st.sampled_from([ro.ReLU, ro.Tanh, ro.Sigmoid, ro.Identity])))
    else:
        pool = draw(st.booleans())
        channels = tuple(draw(st.integers(1, 3)) for _ in range(3))
        net = random_conv_network(rng, channels=channels, size=6 if pool else draw(st.sampled_from([4, 5])),
                                  dense_out=draw(st.integers(1, 3)), density=draw(st.sampled_from([0.3, 0.7])), pool=pool)
    mode = draw(st.sampled_from(["replicated", "free", "fixed"]))
    assignment = [rng.integers(0, k, n) for n in net.unit_counts]
    if mode == "replicated":
        assignment[0] = None
    input_placement = {"replicated": "replicated", "free": "free", "fixed": assignment[0]}[mode]
    if identical:
        cluster = ro.Cluster(k=k, bandwidth=draw(st.sampled_from([1e3, 1e8])), latency=draw(st.sampled_from([0.0, 1e-4])))
    else:
        cluster = ro.Cluster(
            k=k, speed=rng.choice([0.5, 1.0, 2.0], size=k), flop_rate=draw(st.sampled_from([1e6, 1e9])),
            bandwidth=rng.uniform(1e3, 1e6, size=(k, k)), latency=rng.uniform(0, 1e-3, size=(k, k)),
            dtype_bytes=draw(st.sampled_from([2, 4, 8])),
        )
    return net, assignment, cluster, input_placement, draw(st.sampled_from(["gather", "distributed"]))


def _inputs(net: ro.Network, seed: int = 0, n: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n,) + net.input_shape)


# ------------------------------------------------------------------------------ independent recount
def reference(net, assignment, cluster, output, replicated):
    """The SPEC §2 formulas with plain loops, written independently of the simulator's vectorised code."""
    k, L = cluster.k, net.n_layers
    volume = np.zeros(L)
    links = np.zeros((L, k, k))
    flops = np.zeros(k)
    params = np.zeros(k)
    peak = np.zeros(k)
    latency = 0.0
    for l, layer in enumerate(net.structure, start=1):
        M = layer.connectivity.toarray()
        W = net.linear_layers[l - 1].W.reshape(layer.n_units, -1)
        src, dst = assignment[l - 1], assignment[l]
        s_in, o = layer.in_message_size, layer.output_positions
        held = [set() for _ in range(k)]
        for j in range(layer.n_inputs):
            consumers = {int(dst[i]) for i in range(layer.n_units) if M[i, j]}
            if l == 1 and replicated:
                for w in range(k):
                    held[w].add(j)
                continue
            owner = int(src[j])
            held[owner].add(j)
            for w in consumers - {owner}:
                volume[l - 1] += s_in
                links[l - 1, owner, w] += s_in * cluster.dtype_bytes
                held[w].add(j)
        layer_flops = np.zeros(k)
        for i in range(layer.n_units):
            nnz = int(np.count_nonzero(W[i]))
            layer_flops[dst[i]] += 2 * nnz * o + o
            params[dst[i]] += nnz + 1
        flops += layer_flops
        for w in range(k):
            peak[w] = max(peak[w], len(held[w]) * s_in + int(np.sum(dst == w)) * o)
        compute = max(layer_flops[w] / (cluster.flop_rate * cluster.speed[w]) for w in range(k))
        comm = max([cluster.latency[a, b] + links[l - 1, a, b] / cluster.bandwidth[a, b]
                    for a in range(k) for b in range(k) if links[l - 1, a, b] > 0], default=0.0)
        latency += compute + comm
    gather = 0.0
    if output == "gather":
        s_L = net.message_sizes[-1]
        gathered = [s_L * int(np.sum(assignment[-1] == w)) for w in range(k)]
        gather = float(sum(gathered[1:]))
        latency += max([cluster.latency[w, 0] + gathered[w] * cluster.dtype_bytes / cluster.bandwidth[w, 0]
                        for w in range(1, k) if gathered[w] > 0], default=0.0)
    single = flops.sum() / (cluster.flop_rate * cluster.speed[0])
    return {"volume": volume, "links": links, "gather": gather, "flops": flops, "params": params, "peak": peak,
            "latency": latency, "speedup": single / latency if latency > 0 else math.inf}


def _replicated(input_placement) -> bool:
    return isinstance(input_placement, str) and input_placement == "replicated"


def _full(assignment, net):
    return [np.full(net.unit_counts[0], -1) if a is None else np.asarray(a) for a in assignment]


# ---------------------------------------------------------------------------------------- properties
@given(case=placed_networks())
def test_outputs_equal_forward_and_meters_equal_the_formulas(case):
    net, assignment, cluster, input_placement, output = case
    X = _inputs(net)
    report = ro.simulate(net, assignment, cluster, X=X, output=output, input_placement=input_placement)
    np.testing.assert_allclose(report.outputs, net.forward(X), rtol=1e-10, atol=1e-10)
    ref = reference(net, _full(assignment, net), cluster, output, _replicated(input_placement))
    np.testing.assert_array_equal(report.comm_per_layer, ref["volume"])
    np.testing.assert_array_equal(report.link_bytes, ref["links"])
    assert report.gather_scalars == ref["gather"]
    assert report.comm_scalars == ref["volume"].sum() + ref["gather"]
    assert report.comm_bytes == report.comm_scalars * cluster.dtype_bytes
    np.testing.assert_allclose(report.flops, ref["flops"], rtol=1e-12)
    np.testing.assert_array_equal(report.params, ref["params"])
    np.testing.assert_array_equal(report.peak_activation, ref["peak"])
    assert math.isclose(report.latency, ref["latency"], rel_tol=1e-12)
    assert math.isclose(report.speedup, ref["speedup"], rel_tol=1e-12)
    assert math.isclose(report.latency, report.latency_per_layer.sum() + report.gather_latency, rel_tol=1e-12)
    assert sum(m.shape[0] * s for m, s in zip(report.messages, net.message_sizes[:-1], strict=True)) == report.comm_per_layer.sum()


@given(case=placed_networks(), seed=st.integers(0, 1000))
def test_totals_do_not_depend_on_the_placement(case, seed):
    net, assignment, cluster, input_placement, output = case
    report = ro.simulate(net, assignment, cluster, output=output, input_placement=input_placement)
    rng = np.random.default_rng(seed)
    other = [None if a is None else rng.integers(0, cluster.k, len(a)) for a in assignment]
    placement = "replicated" if _replicated(input_placement) else "free"
    moved = ro.simulate(net, other, cluster, output=output, input_placement=placement)
    total = sum(float(layer.flops_per_unit.sum()) for layer in net.structure)
    assert math.isclose(report.flops.sum(), total, rel_tol=1e-12)
    assert math.isclose(moved.flops.sum(), total, rel_tol=1e-12)
    assert report.params.sum() == moved.params.sum() == sum(int(layer.params_per_unit.sum()) for layer in net.structure)


@given(case=placed_networks())
def test_volume_never_exceeds_all_to_all_plus_gather(case):
    net, assignment, cluster, input_placement, output = case
    report = ro.simulate(net, assignment, cluster, output=output, input_placement=input_placement)
    counts, sizes, k = net.unit_counts, net.message_sizes, cluster.k
    bound = [sizes[l - 1] * counts[l - 1] * (k - 1) for l in range(1, len(counts))]
    if _replicated(input_placement):
        bound[0] = 0
    assert np.all(report.comm_per_layer <= bound)
    assert report.gather_scalars <= (sizes[-1] * counts[-1] if output == "gather" else 0)
    assert report.comm_scalars <= sum(bound) + sizes[-1] * counts[-1]


@given(case=placed_networks())
def test_one_worker_sends_nothing(case):
    net, _, _, input_placement, output = case
    cluster = ro.Cluster(k=1)
    assignment = [None if _replicated(input_placement) else np.zeros(net.unit_counts[0], int)]
    assignment += [np.zeros(n, int) for n in net.unit_counts[1:]]
    X = _inputs(net, 1)
    report = ro.simulate(net, assignment, cluster, X=X, output=output,
                         input_placement="replicated" if _replicated(input_placement) else "free")
    assert report.comm_scalars == 0.0 and not report.link_bytes.any() and report.gather_latency == 0.0
    assert math.isclose(report.latency, report.single_worker_time, rel_tol=1e-12)
    assert math.isclose(report.speedup, 1.0, rel_tol=1e-12)
    np.testing.assert_allclose(report.outputs, net.forward(X), rtol=1e-10, atol=1e-10)


@given(case=placed_networks(identical=True), shift=st.integers(1, 3))
def test_relabelling_identical_workers_changes_no_total(case, shift):
    net, assignment, cluster, input_placement, output = case
    k = cluster.k
    if output == "gather":  # the sink is worker 0: only workers 1..K-1 are interchangeable
        sigma = np.r_[0, np.roll(np.arange(1, k), shift)] if k > 1 else np.arange(k)
    else:
        sigma = np.roll(np.arange(k), shift)
    full = _full(assignment, net)
    renamed = list(relabel_workers(tuple(full), sigma))
    placement = renamed[0] if not isinstance(input_placement, str) else input_placement
    if _replicated(input_placement):
        renamed[0] = None
    a = ro.simulate(net, assignment, cluster, output=output, input_placement=input_placement)
    b = ro.simulate(net, renamed, cluster, output=output, input_placement=placement)
    assert a.comm_scalars == b.comm_scalars and a.gather_scalars == b.gather_scalars
    np.testing.assert_array_equal(a.comm_per_layer, b.comm_per_layer)
    np.testing.assert_allclose(b.flops[sigma], a.flops, rtol=1e-12)
    np.testing.assert_array_equal(b.params[sigma], a.params)
    np.testing.assert_array_equal(b.peak_activation[sigma], a.peak_activation)
    np.testing.assert_array_equal(b.link_bytes[:, sigma][:, :, sigma], a.link_bytes)
    assert math.isclose(a.latency, b.latency, rel_tol=1e-12)
    assert math.isclose(a.flops.sum(), b.flops.sum(), rel_tol=1e-12)


def test_a_missing_message_shows_up_in_the_outputs(monkeypatch, rng):
    """The simulator computes from what each worker holds, so a plan that forgets a message is caught."""
    net = random_dense_network(rng, [4, 6, 3], density=1.0)
    assignment = [None, np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 1])]
    X = rng.normal(size=(4, 4))
    honest = ro.simulate(net, assignment, ro.Cluster(k=2), X=X)
    np.testing.assert_allclose(honest.outputs, net.forward(X), rtol=1e-12)
    original = simulator_module.layer_messages

    def forgetful(connectivity, source, placement, k, **kwargs):
        plan = original(connectivity, source, placement, k, **kwargs)
        if source is not None and plan.messages.shape[0]:
            unit, _, dst = plan.messages[0]
            plan.sent[dst, unit] = False
        return plan

    monkeypatch.setattr(simulator_module, "layer_messages", forgetful)
    broken = ro.simulate(net, assignment, ro.Cluster(k=2), X=X)
    assert not np.allclose(broken.outputs, net.forward(X))


@given(case=placed_networks())
def test_dense_and_sparse_message_plans_agree(case):
    """Small layers use a dense M_l, huge ones the CSR arrays: both give the same plan."""
    net, assignment, cluster, _, _ = case
    full = _full(assignment, net)
    for l, layer in enumerate(net.structure, start=1):
        source = None if full[l - 1][0] < 0 else full[l - 1]
        a = simulator_module.layer_messages(layer.connectivity, source, full[l], cluster.k, dense=layer.dense_connectivity)
        b = simulator_module.layer_messages(layer.connectivity, source, full[l], cluster.k)
        for field in ("needed", "sent", "messages", "link_units"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


# ---------------------------------------------------------------------------------------- by hand
def test_dense_example_by_hand():
    net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(np.ones((2, 4)))], input_shape=(4,))
    cluster = ro.Cluster(k=2, flop_rate=1e9, bandwidth=1e8, latency=1e-4, dtype_bytes=4)
    report = ro.simulate(net, [None, [0, 0, 1, 1], [0, 1]], cluster, X=np.arange(8.0).reshape(2, 4))
    np.testing.assert_array_equal(report.outputs, [[6.0, 6.0], [22.0, 22.0]])
    np.testing.assert_array_equal(report.comm_per_layer, [0.0, 4.0])  # each worker fetches the other's 2 units
    assert report.gather_scalars == 1.0 and report.comm_scalars == 5.0 and report.comm_bytes == 20.0
    np.testing.assert_array_equal(report.link_bytes[1], [[0, 8], [8, 0]])
    np.testing.assert_array_equal(report.gather_bytes, [0, 4])
    np.testing.assert_array_equal(report.messages[1], [[2, 1, 0], [3, 1, 0], [0, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(report.flops_per_layer, [[6, 6], [9, 9]])  # 2 units x (2·1+1); 1 unit x (2·4+1)
    np.testing.assert_array_equal(report.params, [2 * 2 + 5, 2 * 2 + 5])
    np.testing.assert_array_equal(report.peak_activation, [6, 6])  # layer 1: 4 replicated inputs + 2 outputs
    expected = [6e-9, 9e-9 + 1e-4 + 8 / 1e8]
    np.testing.assert_allclose(report.latency_per_layer, expected, rtol=1e-12)
    assert math.isclose(report.gather_latency, 1e-4 + 4 / 1e8, rel_tol=1e-12)
    assert math.isclose(report.latency, sum(expected) + 1e-4 + 4 / 1e8, rel_tol=1e-12)
    assert math.isclose(report.speedup, 30e-9 / report.latency, rel_tol=1e-12)
    distributed = ro.simulate(net, [None, [0, 0, 1, 1], [0, 1]], cluster, output="distributed")
    assert distributed.comm_scalars == 4.0 and distributed.gather_latency == 0.0


def test_a_worker_whose_units_read_nothing():
    """Units whose weights are all pruned read no input unit: the worker computes them from its bias alone
    (a restructured network can have that; reshaping its empty weight block once raised)."""
    W2 = np.ones((2, 4))
    W2[1] = 0.0  # unit 1, alone on worker 1, reads nothing
    net = ro.Network([ro.Dense(np.eye(4)), ro.ReLU(), ro.Dense(W2, [0.5, -2.0])], input_shape=(4,))
    X = np.arange(8.0).reshape(2, 4)
    for output in ("gather", "distributed"):
        report = ro.simulate(net, [None, [0, 0, 0, 0], [0, 1]], ro.Cluster(k=2), X=X, output=output)
        np.testing.assert_array_equal(report.outputs, [[6.5, -2.0], [22.5, -2.0]])
        np.testing.assert_array_equal(report.comm_per_layer, [0.0, 0.0])
        assert report.comm_scalars == (1.0 if output == "gather" else 0.0)


def _conv_network() -> ro.Network:
    """input (2, 4, 4) → conv 2→2 (3×3, pad 1; unit 1 reads channel 1 only) → ReLU → maxpool 2 → flatten → dense 8→3."""
    W1 = np.ones((2, 2, 3, 3)) * 0.1
    W1[1, 0] = 0.0
    W2 = np.zeros((3, 8))
    W2[0, 0:4] = 1.0  # channel 0
    W2[1, 4:8] = -1.0  # channel 1
    W2[2, [1, 6]] = 0.5  # both
    return ro.Network([ro.Conv2d(W1, [0.1, -0.2], padding=1), ro.ReLU(), ro.MaxPool2d(2), ro.Flatten(), ro.Dense(W2)],
                      input_shape=(2, 4, 4))


@pytest.mark.parametrize("mode", ["free", "fixed", "replicated"])
def test_conv_maxpool_flatten_example_by_hand(mode):
    net = _conv_network()
    assert net.unit_counts == (2, 2, 3) and net.message_sizes == (16, 4, 1)
    alpha = np.array([[0.0, 1e-3], [2e-3, 0.0]])
    beta = np.array([[1.0, 1e4], [2e4, 1.0]])
    cluster = ro.Cluster(k=2, bandwidth=beta, latency=alpha, flop_rate=1e6, dtype_bytes=4)
    first = None if mode == "replicated" else [0, 1]
    placement = {"free": "free", "fixed": np.array([0, 1]), "replicated": "replicated"}[mode]
    X = np.random.default_rng(3).normal(size=(6, 2, 4, 4))
    report = ro.simulate(net, [first, [0, 1], [0, 1, 1]], cluster, X=X, input_placement=placement)
    np.testing.assert_allclose(report.outputs, net.forward(X), rtol=1e-12, atol=1e-12)
    # Layer 1: input channel 1 (worker 1) is read by conv unit 0 on worker 0: one 4x4 map = 16 scalars.
    # Layer 2: pooled channel 0 (worker 0, 2x2) is read by dense unit 2 on worker 1: 4 scalars.
    # Gather: dense units 1 and 2 sit on worker 1: 2 scalars.
    v1 = 0.0 if mode == "replicated" else 16.0
    np.testing.assert_array_equal(report.comm_per_layer, [v1, 4.0])
    assert report.gather_scalars == 2.0 and report.comm_scalars == v1 + 6.0
    np.testing.assert_array_equal(report.link_bytes[0], [[0, 0], [4 * v1, 0]])
    np.testing.assert_array_equal(report.link_bytes[1], [[0, 16], [0, 0]])
    np.testing.assert_array_equal(report.gather_bytes, [0, 8])
    # FLOPs: conv unit 0 has 18 weights, unit 1 has 9, over 16 positions; dense units have 4, 4, 2 weights.
    np.testing.assert_array_equal(report.flops_per_layer, [[2 * 18 * 16 + 16, 2 * 9 * 16 + 16], [9, 9 + 5]])
    np.testing.assert_array_equal(report.params, [19 + 5, 10 + 5 + 3])
    # Peak memory: worker 0 in layer 1 holds both input maps (32) and its 4x4 conv output (16).
    peak1 = [48, 32] if mode != "replicated" else [48, 48]
    np.testing.assert_array_equal(report.peak_activation, [max(peak1[0], 4 + 1), max(peak1[1], 4 + 4 + 2)])
    compute1 = max(592 / 1e6, 304 / 1e6)
    link1 = 0.0 if mode == "replicated" else 2e-3 + 64 / 2e4
    np.testing.assert_allclose(report.latency_per_layer, [compute1 + link1, 14 / 1e6 + 1e-3 + 16 / 1e4], rtol=1e-12)
    assert math.isclose(report.gather_latency, 2e-3 + 8 / 2e4, rel_tol=1e-12)


def test_summary_is_plain_python():
    import json

    net = _conv_network()
    report = ro.simulate(net, [[0, 1], [0, 1], [0, 1, 1]], ro.Cluster(k=2))
    summary = report.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["comm_scalars"] == 22.0 and summary["comm_per_layer"] == [16.0, 4.0]


def test_input_modes_read_assignment_zero_as_documented():
    net = _conv_network()
    cluster = ro.Cluster(k=2)
    rest = [[0, 1], [0, 1, 1]]
    # replicated overrides whatever assignment[0] says; a fixed placement stands in for an omitted one
    assert ro.simulate(net, [[1, 1]] + rest, cluster, input_placement="replicated").comm_per_layer[0] == 0.0
    assert ro.simulate(net, [None] + rest, cluster, input_placement=np.array([0, 1])).comm_per_layer[0] == 16.0
    assert ro.simulate(net, [None] + rest, cluster).comm_per_layer[0] == 0.0  # inferred: replicated
    with pytest.raises(ro.InvalidParameterError, match=r"`assignment\[0\]` must place every input unit .* 'free'"):
        ro.simulate(net, [None] + rest, cluster, input_placement="free")
    with pytest.raises(ro.InvalidParameterError, match=r"`assignment\[0\]` must equal the fixed `input_placement`"):
        ro.simulate(net, [[1, 1]] + rest, cluster, input_placement=np.array([0, 1]))
