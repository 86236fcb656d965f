"""Nothing lost: saved networks, solutions and clusters round-trip bit-exactly, writes are atomic, and
corruption is detected.

Properties checked:
- ``save_solution``/``load_solution`` give back every field bit for bit: status, objective, bound and gap
  (including -0.0, subnormals, huge values, inf and NaN), backend, message, seed, timings, stats, the
  guarantee, the assignment, the network's weights and layer configurations, the cluster with its K×K α/β
  matrices; the simulation report is recomputed and equals the original one exactly;
- ``Network.save``/``load`` round-trip random dense and conv networks whose weights hold every kind of
  float64 bit pattern (hypothesis);
- a failure in the middle of a write (``np.savez`` or ``fsync`` raising, Ctrl-C) leaves the previous file
  byte-identical and no temporary file behind;
- a flipped byte in an array payload, a truncated file, an array changed behind the checksum, an edited
  header and a newer format version are each refused with a :class:`FormatError` saying which; files
  written before the header checksum existed still load.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
import zipfile
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import repurpose_opt as ro
from repurpose_opt import _io
from repurpose_opt.guarantee import Guarantee
from repurpose_opt.testing import random_conv_network, random_dense_network


def _bits(x) -> bytes | None:
    return None if x is None else struct.pack("<d", float(x))


def _network_bytes(net: ro.Network) -> list:
    return [(layer.to_config(), layer.W.tobytes(), layer.b.tobytes()) for layer in net.linear_layers] + [
        [layer.to_config() for layer in net.layers], net.input_shape]


def assert_same_solution(a: ro.Solution, b: ro.Solution) -> None:
    """Field by field, bit for bit."""
    assert (a.status, a.backend, a.message, a.output, a.seed) == (b.status, b.backend, b.message, b.output, b.seed)
    assert type(b.seed) is type(a.seed)
    for name in ("objective", "bound", "gap"):
        assert _bits(getattr(a, name)) == _bits(getattr(b, name)), name
    assert json.dumps(a.timings, sort_keys=True) == json.dumps(b.timings, sort_keys=True)
    assert json.dumps(_io_json(a.stats), sort_keys=True) == json.dumps(b.stats, sort_keys=True)
    if a.assignment is None:
        assert b.assignment is None
    else:
        assert len(a.assignment) == len(b.assignment)
        for x, y in zip(a.assignment, b.assignment, strict=True):
            assert x.dtype == y.dtype == np.int64 and x.tobytes() == y.tobytes() and not y.flags.writeable
    assert (a.network is None) == (b.network is None)
    if a.network is not None:
        assert _network_bytes(a.network) == _network_bytes(b.network)
    assert (a.cluster is None) == (b.cluster is None)
    if a.cluster is not None:
        for field in dataclasses.fields(ro.Cluster):
            x, y = getattr(a.cluster, field.name), getattr(b.cluster, field.name)
            if isinstance(x, np.ndarray):
                assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), field.name
            else:
                assert x == y and type(x) is type(y), field.name
    assert (a.guarantee is None) == (b.guarantee is None)
    if a.guarantee is not None:
        assert json.dumps(a.guarantee.to_dict(), sort_keys=True) == json.dumps(b.guarantee.to_dict(), sort_keys=True)
        for field in dataclasses.fields(Guarantee):  # JSON keeps values and types, not the order of dict keys
            x, y = getattr(a.guarantee, field.name), getattr(b.guarantee, field.name)
            assert type(x) is type(y) and json.dumps(_io_json(x), sort_keys=True) == json.dumps(_io_json(y), sort_keys=True)
    assert (a.report is None) == (b.report is None)
    if a.report is not None:
        for field in dataclasses.fields(a.report):
            x, y = getattr(a.report, field.name), getattr(b.report, field.name)
            if field.name == "messages":
                assert all(m.tobytes() == n.tobytes() for m, n in zip(x, y, strict=True))
            elif isinstance(x, np.ndarray):
                assert x.tobytes() == y.tobytes(), field.name
            elif x is not None:
                assert _bits(x) == _bits(y), field.name


def _io_json(value):
    """What JSON keeps of a value (mappings become dicts, tuples lists, numpy scalars Python numbers)."""
    def plain(v):
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v.item() if isinstance(v, np.generic) else v

    return json.loads(json.dumps(plain(value)))


@pytest.fixture(scope="module")
def restructured():
    rng = np.random.default_rng(5)
    net = random_dense_network(rng, [6, 10, 8, 4], density=0.8)
    cluster = ro.Cluster(k=3, speed=[1.0, 2.0, 0.5], flops_capacity=[1e5, 2e5, 3e5], param_capacity=1e4,
                         bandwidth=rng.uniform(1e6, 1e8, size=(3, 3)), latency=rng.uniform(0, 1e-3, size=(3, 3)),
                         flop_rate=3.7e9, dtype_bytes=2)
    problem = ro.RestructureProblem(net, cluster, calibration=rng.normal(size=(80, 6)), tolerance=[0.2, 0.3, 0.3],
                                    input_placement="free", output="gather", imbalance=0.25)
    sol = ro.solve(problem, backend="repurpose", seed=3)
    assert sol.status.has_solution and sol.guarantee is not None
    return problem, sol


# ------------------------------------------------------------------------------------------ round trips
def test_a_restructured_solution_round_trips_bit_exactly(restructured, tmp_path):
    problem, sol = restructured
    loaded = ro.load_solution(ro.save_solution(sol, tmp_path / "sol.npz"))
    assert_same_solution(sol, loaded)
    assert ro.verify(problem, loaded).ok
    again = ro.load_solution(ro.save_solution(loaded, tmp_path / "again.npz"))  # a second trip changes nothing
    assert_same_solution(sol, again)
    assert (tmp_path / "sol.npz").read_bytes() == (tmp_path / "again.npz").read_bytes()


@pytest.mark.parametrize(
    ("objective", "bound", "gap"),
    [(1 / 3, 0.1 + 0.2, 5e-324), (-0.0, -0.0, 0.0), (1.7976931348623157e308, -1.7976931348623157e308, math.inf),
     (math.inf, -math.inf, math.nan), (2.0**-1074 * 3, None, None), (None, None, None)],
)
def test_numbers_survive_every_bit_pattern(restructured, objective, bound, gap, tmp_path):
    sol = dataclasses.replace(restructured[1], objective=objective, bound=bound, gap=gap, seed=2**62,
                              timings={"solve": 1 / 7, "total": 5e-324}, message="ünïcode ✓ \n\t\"quotes\"",
                              stats={"nested": {"a": [1, 2.5, None, True, "x"], "b": -0.0}, "big": 2**80, "nan": math.nan})
    loaded = ro.load_solution(ro.save_solution(sol, tmp_path / "sol.npz"))
    assert_same_solution(sol, loaded)
    assert loaded.stats["big"] == 2**80 and math.isnan(loaded.stats["nan"]) and math.copysign(1, loaded.stats["nested"]["b"]) < 0


def test_solutions_without_placement_and_pruning_solutions_round_trip(tmp_path):
    net = ro.Network([ro.Dense(np.ones((4, 4))), ro.ReLU(), ro.Dense(np.ones((2, 4)))], input_shape=(4,))
    # Layer 1 needs 2 units per worker (27 FLOPs each); worker 1 may only do 20: no placement exists.
    infeasible = ro.solve(ro.PartitionProblem(net, ro.Cluster(k=2, flops_capacity=[40.0, 20.0])), backend="bruteforce")
    assert infeasible.status is ro.Status.INFEASIBLE and infeasible.assignment is None
    assert_same_solution(infeasible, ro.load_solution(ro.save_solution(infeasible, tmp_path / "infeasible.npz")))
    X = np.random.default_rng(1).normal(size=(200, 6))
    layer = ro.Dense(np.random.default_rng(2).normal(size=(4, 6)))
    pruning = ro.PruningProblem(X, layer.apply(X), layer, [0, 0, 1, 1], ro.Cluster(k=2), input_placement=[0, 0, 0, 1, 1, 1],
                                tolerance=0.2)
    sol = ro.solve(pruning, backend="greedy")
    loaded = ro.load_solution(ro.save_solution(sol, tmp_path / "pruning.npz"))
    assert_same_solution(sol, loaded)
    assert ro.verify(pruning, loaded).ok


def test_partition_solutions_with_bound_and_fixed_input_round_trip(tmp_path):
    net = random_conv_network(np.random.default_rng(4), channels=(2, 3, 2), size=6, dense_out=2)
    cluster = ro.Cluster(k=2, bandwidth=[[1.0, 2e6], [3e6, 1.0]], latency=[[0.0, 1e-4], [3e-4, 0.0]])
    problem = ro.PartitionProblem(net, cluster, input_placement=[0, 1], output="distributed", objective="latency")
    sol = ro.solve(problem, backend="bruteforce")
    assert sol.status is ro.Status.OPTIMAL and sol.bound is not None
    loaded = ro.load_solution(ro.save_solution(sol, tmp_path / "sol.npz"))
    assert_same_solution(sol, loaded)
    assert ro.verify(problem, loaded).ok


FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308]),
)


@settings(max_examples=25)
@given(data=st.data(), conv=st.booleans())
def test_networks_round_trip_bit_exactly(data, conv, tmp_path_factory):
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if conv:
        pool = data.draw(st.booleans())
        net = random_conv_network(rng, channels=(1, data.draw(st.integers(1, 3)), 2), size=6 if pool else 4, dense_out=2,
                                  pool=pool)
    else:
        net = random_dense_network(rng, [data.draw(st.integers(1, 6)) for _ in range(data.draw(st.integers(2, 4)))])
    weights = [(data.draw(hnp.arrays(np.float64, layer.W.shape, elements=FLOATS)),
                data.draw(hnp.arrays(np.float64, layer.b.shape, elements=FLOATS))) for layer in net.linear_layers]
    net = net.with_weights(weights)
    path = net.save(tmp_path_factory.mktemp("net") / "net")
    loaded = ro.Network.load(path)
    assert _network_bytes(loaded) == _network_bytes(net)
    assert not [p for p in path.parent.iterdir() if p.name != "net.npz"]  # no temporary file left behind


def test_clusters_round_trip_bit_exactly(tmp_path):
    rng = np.random.default_rng(0)
    cluster = ro.Cluster(k=4, speed=rng.uniform(0.1, 3, 4), flops_capacity=rng.uniform(1e3, 1e9, 4), param_capacity=None,
                         bandwidth=rng.uniform(1e3, 1e10, (4, 4)), latency=np.abs(rng.normal(size=(4, 4))) * 1e-4,
                         flop_rate=1 / 3 * 1e9, dtype_bytes=8)
    loaded = ro.Cluster.load(cluster.save(tmp_path / "cluster.json"))
    for field in dataclasses.fields(ro.Cluster):
        x, y = getattr(cluster, field.name), getattr(loaded, field.name)
        assert (x is None and y is None) or np.asarray(x).tobytes() == np.asarray(y).tobytes(), field.name


# ------------------------------------------------------------------------------------------- atomic writes
def _writers(restructured):
    problem, sol = restructured
    return {
        "network": (lambda path: problem.network.save(path), lambda path: ro.Network.load(path)),
        "solution": (lambda path: ro.save_solution(sol, path), lambda path: ro.load_solution(path)),
    }


def _failing_savez(original):
    def savez(file, *args, **kwargs):
        original(file, *args, **kwargs)  # the whole archive is in the temporary file ...
        file.write(b"garbage")
        raise OSError(28, "No space left on device")  # ... and then the disk fills up

    return savez


@pytest.mark.parametrize("kind", ["network", "solution"])
@pytest.mark.parametrize("failure", ["savez", "fsync", "interrupt"])
def test_a_failed_write_leaves_the_old_file_intact(kind, failure, restructured, tmp_path, monkeypatch):
    save, load = _writers(restructured)[kind]
    path = save(tmp_path / "file.npz")
    before = path.read_bytes()
    if failure == "savez":
        monkeypatch.setattr(np, "savez", _failing_savez(np.savez))
        expected = OSError
    elif failure == "fsync":
        def fsync(fd):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", fsync)
        expected = OSError
    else:
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(np, "savez", interrupted)
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.npz"]  # the temporary file is gone
    load(path)


def test_a_failed_cluster_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = ro.Cluster(k=2).save(tmp_path / "cluster.json")
    before = path.read_bytes()

    def fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        ro.Cluster(k=3).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["cluster.json"]
    assert ro.Cluster.load(path).k == 2


def test_a_write_replaces_the_file_in_one_rename(restructured, tmp_path, monkeypatch):
    """The destination is only ever touched by os.replace of a complete temporary file in the same directory."""
    problem, _ = restructured
    path = problem.network.save(tmp_path / "net.npz")
    calls = []
    monkeypatch.setattr(os, "replace", _checked_replace(os.replace, calls))
    problem.network.save(path)
    assert calls == [(str(tmp_path), str(path))]


def _checked_replace(original, calls):
    def replace(src, dst):
        src, dst = os.fspath(src), os.fspath(dst)
        calls.append((os.path.dirname(src), dst))
        with zipfile.ZipFile(src) as archive:  # complete and consistent before it is published
            assert archive.testzip() is None and "__header__.npy" in archive.namelist()
        original(src, dst)

    return replace


# -------------------------------------------------------------------------------------------- corruption
def _rewrite(path, dest, header=None, arrays=None, drop_digest=False):
    """Re-zip a saved file with an edited header and/or arrays (the zip itself stays well-formed)."""
    with np.load(path) as data:
        content = {key: np.array(data[key]) for key in data.files}
    parsed = json.loads(content["__header__"].tobytes().decode())
    if header:
        parsed.update(header)
    if drop_digest:
        parsed.pop("header_sha256", None)
    if arrays:
        content.update(arrays)
    content["__header__"] = np.frombuffer(json.dumps(parsed, sort_keys=True).encode(), dtype=np.uint8)
    np.savez(dest, **content)
    return dest


def test_damaged_solution_files(restructured, tmp_path):
    _, sol = restructured
    path = ro.save_solution(sol, tmp_path / "sol.npz")
    data = path.read_bytes()

    # One byte flipped inside a weight array's payload: the zip's CRC-32 catches it.
    W = sol.network.linear_layers[1].W.tobytes()
    offset = data.find(W)
    assert offset > 0
    flipped = bytearray(data)
    flipped[offset + len(W) // 2] ^= 0x01
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    with pytest.raises(ro.FormatError, match="is not a readable repurpose-opt/solution file \\(corrupted or truncated\\)"):
        ro.load_solution(tmp_path / "flipped.npz")

    # Truncated anywhere: refused.
    for cut in (0, 10, len(data) // 3, len(data) // 2, len(data) - 22, len(data) - 1):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(ro.FormatError, match="corrupted or truncated"):
            ro.load_solution(tmp_path / "cut.npz")

    # An array changed and re-zipped properly: only the SHA-256 of the arrays notices.
    placement = sol.assignment[1].copy()
    placement[0] = (placement[0] + 1) % 3
    _rewrite(path, tmp_path / "changed.npz", arrays={"assignment1": placement})
    with pytest.raises(ro.FormatError, match="failed its checksum: the file is corrupted"):
        ro.load_solution(tmp_path / "changed.npz")

    # The header edited (a better objective): the header's own SHA-256 notices.
    _rewrite(path, tmp_path / "edited.npz", header={"objective": 0.0})
    with pytest.raises(ro.FormatError, match="failed its header checksum: the file's description was altered or corrupted"):
        ro.load_solution(tmp_path / "edited.npz")

    # A newer format version: the message says to upgrade, whatever else changed.
    for extra in ({}, {"objective": 0.0, "new_field": [1, 2]}):
        _rewrite(path, tmp_path / "newer.npz", header={"version": 2, **extra})
        with pytest.raises(ro.FormatError, match="has format version 2; this repurpose-opt reads versions up to 1: upgrade"):
            ro.load_solution(tmp_path / "newer.npz")
    _rewrite(path, tmp_path / "version.npz", header={"version": "1"})
    with pytest.raises(ro.FormatError, match="has no valid format version, got '1'"):
        ro.load_solution(tmp_path / "version.npz")

    # A file from before the header checksum existed is still read.
    assert_same_solution(sol, ro.load_solution(_rewrite(path, tmp_path / "old.npz", drop_digest=True)))


def test_damaged_network_files(restructured, tmp_path):
    net = restructured[0].network
    path = net.save(tmp_path / "net.npz")
    _rewrite(path, tmp_path / "newer.npz", header={"version": 7})
    with pytest.raises(ro.FormatError, match="has format version 7; this repurpose-opt reads versions up to 1: upgrade"):
        ro.Network.load(tmp_path / "newer.npz")
    _rewrite(path, tmp_path / "edited.npz", header={"input_shape": [6, 1, 1]})
    with pytest.raises(ro.FormatError, match="failed its header checksum"):
        ro.Network.load(tmp_path / "edited.npz")
    with np.load(path) as data:
        arrays = {key: np.array(data[key]) for key in data.files if key != "__header__"}
    header = json.loads(np.load(path)["__header__"].tobytes().decode())
    body = {k: v for k, v in header.items() if k not in ("format", "version", "sha256", "header_sha256")}
    del arrays["b0"]  # a consistent file (checksums recomputed) that lacks a bias
    _io.write_npz(tmp_path / "nobias.npz", "repurpose-opt/network", 1, body, arrays)
    with pytest.raises(ro.FormatError, match="malformed network description: .*W0 and b0, the weights of layer 0"):
        ro.Network.load(tmp_path / "nobias.npz")
    _io.write_npz(tmp_path / "layers.npz", "repurpose-opt/network", 1, body | {"layers": "dense"}, arrays)
    with pytest.raises(ro.FormatError, match="`layers` must be a list of layer descriptions"):
        ro.Network.load(tmp_path / "layers.npz")


@pytest.mark.parametrize(
    ("offset", "value", "what"),
    [(8, 0x01, "encrypted flag"), (8, 0x20, "patched-data flag"), (8, 0x40, "strong-encryption flag"),
     (10, 12, "bzip2 method"), (10, 14, "lzma method"), (10, 99, "unknown method"), (6, 109, "zip version 10.9")],
)
def test_damaged_zip_metadata_is_a_format_error(offset, value, what, tmp_path):
    """Flags and methods in the zip's central directory that zipfile answers with NotImplementedError,
    RuntimeError or a decompressor's error (found by the fuzz in test_fuzz.py)."""
    net = random_dense_network(np.random.default_rng(0), [3, 4, 2])
    data = bytearray(net.save(tmp_path / "net.npz").read_bytes())
    start = data.rfind(b"PK\x01\x02")  # the central directory entry of the last member (the header)
    assert start > 0
    data[start + offset] = value
    (tmp_path / "damaged.npz").write_bytes(bytes(data))
    with pytest.raises(ro.FormatError, match="is not a readable repurpose-opt/network file \\(corrupted or truncated\\)"):
        ro.Network.load(tmp_path / "damaged.npz")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("objective", "5", "the solution's `objective` must be a number or null, got '5'"),
        ("gap", True, "the solution's `gap` must be a number or null, got True"),
        ("output", "all", "the solution's `output` must be 'gather' or 'distributed', got 'all'"),
        ("timings", {"solve": "fast"}, "the solution's `timings` must be an object of numbers"),
        ("n_assignment", -1, "the solution's `n_assignment` must be a positive integer or null, got -1"),
        ("n_assignment", 9, "has a malformed solution description: KeyError('assignment4')"),
        ("status", "DONE", "has a malformed solution description: ValueError(\"'DONE' is not a valid Status\")"),
        ("seed", 0.5, "the solution's `seed` must be an integer or null, got 0.5"),
        ("cluster", {"k": 0}, "has a malformed solution description"),
    ],
)
def test_consistent_files_with_nonsense_fields_are_refused(restructured, field, value, message, tmp_path):
    """A file whose checksums are right but whose description is nonsense (written by another tool)."""
    path = ro.save_solution(restructured[1], tmp_path / "sol.npz")
    header, arrays = _io.read_npz(path, "repurpose-opt/solution", 1)
    body = {k: v for k, v in header.items() if k not in ("format", "version", "sha256", "header_sha256")}
    _io.write_npz(tmp_path / "bad.npz", "repurpose-opt/solution", 1, body | {field: value}, arrays)
    with pytest.raises(ro.FormatError, match=_escape(message)):
        ro.load_solution(tmp_path / "bad.npz")


def _escape(text: str) -> str:
    return re.escape(text)
