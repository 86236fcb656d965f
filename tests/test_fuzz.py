"""Bad input everywhere: pinned messages for what test_bad_input.py does not cover, then hypothesis fuzzing.

Part 1 (tables) pins the message of each refusal added for issue 6: complex, string, object and
out-of-float-range arrays; K and ``dtype_bytes`` beyond their caps; arguments that are not paths; damaged
cluster files; export directories and worker lists; zoo names; scikit-learn and torch models with
malformed weights; ``verify`` on solutions that do not belong to the problem; hand-built solutions that
cannot be saved; the CLI printing one ``error:`` line and exiting with 2.

Part 2 (fuzz) feeds random garbage (None, bools, huge ints, NaN/inf, strings, bytes, nested lists, dicts,
arrays of every dtype and shape, odd objects) to every public entry point, one argument at a time, the
others valid, and checks the one property: nothing but a :class:`RepurposeError` escapes (returning
normally is fine). Option *values* are checked per backend at the end, with the bugs fuzzing found, kept
as regression tests.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import repurpose_opt as ro
from repurpose_opt import zoo
from repurpose_opt.cli import main
from repurpose_opt.errors import RepurposeError
from repurpose_opt.guarantee import certify
from repurpose_opt.runtime import export, load_export
from repurpose_opt.testing import random_dense_network


def raises(error, message):
    assert issubclass(error, RepurposeError)
    return pytest.raises(error, match=re.escape(message))


def _net() -> ro.Network:
    return ro.Network([ro.Dense(np.arange(12.0).reshape(4, 3) - 5), ro.ReLU(), ro.Dense(np.ones((2, 4)))],
                      input_shape=(3,))


@pytest.fixture(scope="module")
def solved():
    """A restructured solution (with a guarantee) of a small network, and its problem."""
    rng = np.random.default_rng(0)
    net = random_dense_network(rng, [6, 8, 4], density=1.0)
    problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=rng.normal(size=(40, 6)), tolerance=0.2)
    return problem, ro.solve(problem, backend="repurpose", seed=0)


# =========================================================================================== tables
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ro.Dense(np.ones((2, 3), dtype=complex)), "`W` must be an array of real numbers, got dtype complex128"),
        (lambda: ro.Dense(np.ones((2, 3)), np.array([1j, 0])), "`b` must be an array of real numbers, got dtype complex128"),
        (lambda: ro.Dense(np.array([[1.0, None]], dtype=object)),
         "`W` must be an array of real numbers, got array of shape (1, 2) and dtype object"),
        (lambda: ro.Dense([[1.0, [2.0]]]), "`W` must be an array of real numbers, got [[1.0, [2.0]]]"),
        (lambda: ro.Dense([[10**400, 1]]), "`W` must be an array of real numbers within the float64 range"),
        (lambda: ro.Dense(np.array([["1.5", "2"]])), "`W` must be an array of real numbers, got dtype <U3"),
        (lambda: ro.Conv2d(np.ones((1, 1, 2, 2), dtype=np.complex64)), "`W` must be an array of real numbers, got dtype complex64"),
        (lambda: _net().forward(np.ones((2, 3)) + 1j), "`X` must be an array of real numbers, got dtype complex128"),
        (lambda: _net().forward(np.array(["2020-01-01"] * 3, dtype="datetime64[D]").reshape(1, 3)),
         "`X` must be an array of real numbers, got dtype datetime64[D]"),
        (lambda: ro.RestructureProblem(_net(), ro.Cluster(k=2), calibration=np.ones((5, 3), dtype=complex), tolerance=0.1),
         "`calibration` must be an array of real numbers, got dtype complex128"),
        (lambda: ro.Cluster(k=10**29), "`k` must be <= 1024, got 100000000000000000000000000000"),
        (lambda: ro.Cluster(k=2000), "`k` must be <= 1024, got 2000"),
        (lambda: ro.Cluster(k=2, dtype_bytes=10**6), "`dtype_bytes` must be <= 1024, got 1000000"),
        (lambda: ro.Cluster(k=2, flop_rate=10**400), "`flop_rate` must be finite, got an integer of about 400 digits"),
        (lambda: ro.Cluster(k=2, speed=[1, 2j]), "`speed` must be an array of real numbers, got dtype complex128"),
        (lambda: ro.Cluster(k=2, bandwidth="fast"), "`bandwidth` must be an array of real numbers, got dtype <U4"),
        (lambda: ro.Cluster(k=2, speed=[1e308, 1e308]), "`speed` must have a finite sum, got speeds up to 1e+308"),
        # empty arrays
        (lambda: ro.Conv2d(np.ones((1, 1, 0, 3))), "`W` must not be empty, got shape (1, 1, 0, 3)"),
        (lambda: ro.Cluster(k=2, speed=[]), "`speed` must not be empty, got shape (0,)"),
        (lambda: ro.RestructureProblem(_net(), ro.Cluster(k=2), calibration=np.ones((0, 3)), tolerance=0.1),
         "`calibration` must not be empty, got shape (0, 3)"),
        (lambda: ro.RestructureProblem(_net(), ro.Cluster(k=2), calibration=np.ones((5, 3)), tolerance=[]),
         "`tolerance` must not be empty, got shape (0,)"),
        (lambda: ro.PruningProblem(np.ones((0, 3)), np.ones((0, 4)), ro.Dense(np.ones((4, 3))), [0, 0, 1, 1], ro.Cluster(k=2),
                                   tolerance=0.1), "`inputs` must not be empty, got shape (0, 3)"),
    ],
)
def test_arrays_and_numbers_must_be_real_and_in_range(build, message):
    with raises(ro.InvalidProblemError, message):
        build()


PATH_MESSAGE = "`path` must be a file system path (a non-empty str or os.PathLike), got "


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda tmp: ro.Network.load(None), PATH_MESSAGE + "None"),
        (lambda tmp: ro.load_solution(3), PATH_MESSAGE + "3"),
        (lambda tmp: ro.Cluster.load(b"cluster.json"), PATH_MESSAGE + "b'cluster.json'"),
        (lambda tmp: _net().save(""), PATH_MESSAGE + "''"),
        (lambda tmp: _net().save(["a.npz"]), PATH_MESSAGE + "['a.npz']"),
        (lambda tmp: _net().save("/"), "`path` must name a file, got '/'"),
        (lambda tmp: ro.Cluster(k=2).save(1.5), PATH_MESSAGE + "1.5"),
        (lambda tmp: load_export(None), "`directory` must be a file system path (a non-empty str or os.PathLike), got None"),
        (lambda tmp: load_export(tmp, workers=1), "`workers` must be an iterable of worker ranks (int), got int"),
        (lambda tmp: load_export(tmp, workers="01"), "`workers` must be an iterable of worker ranks (int), got str"),
        (lambda tmp: load_export(tmp, workers=[0, "a"]), "`workers` must hold integer ranks, got 'a'"),
        (lambda tmp: load_export(tmp, workers=[True]), "`workers` must hold integer ranks, got True"),
        (lambda tmp: zoo.load(["digits_mlp"]), "`name` must be one of 'digits_mlp', 'digits_cnn', 'mnist1d_mlp', got ['digits_mlp']"),
        (lambda tmp: zoo.load({}), "`name` must be one of 'digits_mlp', 'digits_cnn', 'mnist1d_mlp', got {}"),
    ],
)
def test_paths_workers_and_names(call, message, tmp_path):
    with raises(ro.InvalidParameterError, message):
        call(tmp_path)


def test_a_huge_imbalance_caps_capacities_at_the_layer_size():
    """Before: ⌈(1 + 1e300)·n/K⌉ overflowed int64 to a negative capacity and every backend failed."""
    problem = ro.PartitionProblem(_net(), ro.Cluster(k=2, speed=[1e300, 1.0]), imbalance=1e300)
    assert [c.tolist() for c in problem.capacities[1:]] == [[4, 4], [2, 2]]
    assert ro.solve(problem, backend="direct", verify=True).status is ro.Status.FEASIBLE


def test_placements_with_huge_integers_name_the_range():
    with raises(ro.InvalidParameterError, "`assignment[1]` must hold worker indices in 0..1, got values in -1..10000000000"):
        ro.simulate(_net(), [None, [0, 10**10, 1, -1], [0, 1]], ro.Cluster(k=2))
    with raises(ro.InvalidProblemError, "`input_placement` must hold worker indices in 0..1, got values in 0..an integer of about 100 digits"):
        ro.PartitionProblem(_net(), ro.Cluster(k=2), input_placement=[0, 1, 10**100])


def test_export_directory_must_be_a_path(solved):
    with raises(ro.InvalidParameterError, "`directory` must be a file system path (a non-empty str or os.PathLike), got 3"):
        export(solved[1], 3)


def test_zoo_model_methods_check_their_arguments():
    model = zoo.load("digits_mlp")
    with raises(ro.InvalidParameterError, "`n` must be an integer, got 'x'"):
        model.calibration("x")
    with raises(ro.InvalidParameterError, "`n` must be an integer, got 2.0"):
        model.calibration(2.0)
    with raises(ro.InvalidParameterError, "`network` must be a repurpose_opt.Network, got str"):
        model.accuracy("net")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00{", "is not a readable cluster JSON file"),
        (b'{"format": "repurpose-opt/cluster", "version": true, "k": 2}', "has no valid cluster format version, got True"),
        (b'{"format": "repurpose-opt/cluster", "version": 0, "k": 2}', "has no valid cluster format version, got 0"),
        (b'{"format": "repurpose-opt/cluster", "version": 1, "k": 4096}', "describes an invalid cluster: `k` must be <= 1024"),
        (b"[" * 100_000, "is not a readable cluster JSON file"),
    ],
)
def test_damaged_cluster_files(content, message, tmp_path):
    path = tmp_path / "cluster.json"
    path.write_bytes(content)
    with raises(ro.FormatError, message):
        ro.Cluster.load(path)


# ---------------------------------------------------------------------------------------- importers
def _sklearn_mlp():
    from sklearn.neural_network import MLPRegressor

    X = np.random.default_rng(0).normal(size=(30, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MLPRegressor(hidden_layer_sizes=(5,), max_iter=5, random_state=0).fit(X, X[:, :2])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"coefs_": [], "intercepts_": []}, "`model` (MLPRegressor) has malformed fitted weights: `coefs_` and "
                                            "`intercepts_` must be non-empty lists of the same length"),
        ({"coefs_": "abc"}, "has malformed fitted weights"),
        ({"intercepts_": "short"}, "has malformed fitted weights"),
        ({"activation": ["relu"]}, "`model.activation` must be one of 'relu', 'tanh', 'logistic', 'identity', got ['relu']"),
        ({"activation": "softplus"}, "`model.activation` must be one of 'relu', 'tanh', 'logistic', 'identity', got 'softplus'"),
        ({"coefs_": [np.full((4, 5), np.nan), np.ones((5, 2))]}, "`model.coefs_[0]` must be finite, got 20 NaN or infinite entries"),
        ({"coefs_": [np.ones((4, 5)) + 1j, np.ones((5, 2))]}, "`model.coefs_[0]` must be an array of real numbers, got dtype complex128"),
        ({"intercepts_": [np.ones(4), np.ones(2)]}, "`model.intercepts_[0]` must have shape (5,), got (4,)"),
    ],
)
def test_malformed_sklearn_models(change, message):
    model = _sklearn_mlp()
    if "intercepts_" in change and change["intercepts_"] == "short":
        change = {"intercepts_": model.intercepts_[:1]}
    for key, value in change.items():
        setattr(model, key, value)
    with raises(ro.InvalidProblemError, message):
        ro.Network.from_sklearn(model)


def _torch_cases():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    infinite = nn.Linear(3, 3)
    with torch.no_grad():
        infinite.weight[0, 0] = float("inf")
    negative = nn.BatchNorm1d(3)
    negative.running_var.fill_(-1.0)
    return [
        (lambda: ro.Network.from_torch(nn.Sequential(nn.Linear(3, 3)), input_shape="abc"),
         "`input_shape` must be a tuple of positive integers, got 'abc'"),
        (lambda: ro.Network.from_torch(nn.Sequential(nn.Linear(3, 3)), input_shape=(None,)), "`input_shape` must be an integer, got None"),
        (lambda: ro.Network.from_torch(nn.Sequential(nn.Linear(3, 3, bias=False, dtype=torch.complex64))),
         "module '0' (Linear): its weight is complex (torch.complex64); only real weights are supported"),
        (lambda: ro.Network.from_torch(nn.Sequential(nn.Linear(3, 3, device="meta"))),
         "module '0' (Linear): its bias cannot be read as numbers (meta torch.float32)"),
        (lambda: ro.Network.from_torch(nn.Sequential(infinite)), "module '0' (Linear): `W` must be finite, got 1 NaN or infinite entries"),
        (lambda: ro.Network.from_torch(nn.Sequential(nn.Linear(3, 3), negative)),
         "module '1' (BatchNorm1d): `running_var` + eps must be finite and > 0 for every feature"),
    ]


def test_malformed_torch_models():
    for build, message in _torch_cases():
        with raises(ro.InvalidProblemError, message):
            build()


# ------------------------------------------------------------------------------------------- verify
def test_verify_reports_solutions_of_another_problem_instead_of_raising(solved):
    problem, sol = solved
    other = random_dense_network(np.random.default_rng(1), [6, 9, 4])
    deeper = random_dense_network(np.random.default_rng(1), [6, 8, 8, 4])
    cases = {
        "layer 0: weight shape (9, 6) differs from (8, 6)": dataclasses.replace(sol, network=other),
        "the solution's network does not have the problem network's topology": dataclasses.replace(sol, network=deeper),
        "the solution's network is a str, not a Network": dataclasses.replace(sol, network="net"),
        "assignment is malformed: `assignment` must be a sequence of placements, got int": dataclasses.replace(sol, assignment=5),
        "objective an integer of about 400 digits is not a finite number": dataclasses.replace(sol, objective=10**400),
        "bound 'low' is not a number": dataclasses.replace(sol, bound="low"),
        "gap [0.1] is not a number": dataclasses.replace(sol, gap=[0.1]),
    }
    for message, tampered in cases.items():
        check = ro.verify(problem, tampered)
        assert not check.ok and message in check.violations, (message, check.violations)


# ------------------------------------------------------------------------------ solutions on disk
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "OPTIMAL"}, "`solution.status` must be a repurpose_opt.Status, got str"),
        ({"objective": "5"}, "`solution.objective` must be a real number or None, got str"),
        ({"gap": True}, "`solution.gap` must be a real number or None, got bool"),
        ({"stats": {"x": object()}}, "its description is not JSON-serialisable"),
        ({"stats": [1]}, "`solution.stats` must be a dict, got list"),
        ({"timings": None}, "`solution.timings` must be a dict, got NoneType"),
        ({"output": "all"}, "`solution.output` must be 'gather' or 'distributed', got 'all'"),
        ({"seed": 1.5}, "`solution.seed` must be an int or None, got float"),
        ({"network": "net"}, "`solution.network` must be a repurpose_opt.Network or None, got str"),
        ({"cluster": 2}, "`solution.cluster` must be a repurpose_opt.Cluster or None, got int"),
        ({"guarantee": {"A": 1}}, "`solution.guarantee` must be a repurpose_opt Guarantee or None, got dict"),
        ({"assignment": np.zeros((3, 4), int)}, "`solution.assignment` must be a tuple of int arrays or None, got ndarray"),
        ({"assignment": (np.zeros(6, int), np.full(8, 0.5), np.zeros(4, int))},
         "`solution.assignment[1]` must be a 1-D integer array, got shape (8,) and dtype float64"),
    ],
)
def test_hand_built_solutions_that_cannot_be_saved(solved, change, message, tmp_path):
    path = tmp_path / "sol.npz"
    with raises(ro.InvalidParameterError, message):
        ro.save_solution(dataclasses.replace(solved[1], **change), path)
    assert not path.exists() and not list(tmp_path.iterdir())  # refused before anything was written


# ------------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def files(tmp_path_factory, solved):
    d = tmp_path_factory.mktemp("cli")
    paths = {"solution": str(ro.save_solution(solved[1], d / "sol.npz")), "dir": str(d)}
    np.save(d / "complex.npy", np.ones((2, 6), dtype=complex))
    paths["complex"] = str(d / "complex.npy")
    (d / "binary.json").write_bytes(b"\xff\xfe\x00")
    paths["binary"] = str(d / "binary.json")
    return paths


def _one_line_error(capsys, fragment: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and fragment in err[-1], err
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["simulate", "{solution}", "--cluster", "{binary}"], "is not a readable cluster JSON file"),
        (["simulate", "{solution}", "--k", "99999999999999999999"], "`k` must be <= 1024, got 99999999999999999999"),
        (["simulate", "{solution}", "--input", "{complex}"], "`X` must be an array of real numbers, got dtype complex128"),
        (["simulate", "{solution}", "--json", "{dir}"], "`--json` must be a file to write, got the directory"),
        (["export", "--solution", "{binary}", "--out", "{dir}/export"], "is not a readable repurpose-opt/solution file"),
        (["tradeoff", "--tolerances", "-0.1", "--no-progress"], "`--tolerances` must be >= 0.0, got -0.1"),
        (["tradeoff", "--tolerances", "nan", "--no-progress"], "`--tolerances` must be finite, got nan"),
        (["tradeoff", "--time-limit", "0", "--no-progress"], "`--time-limit` must be > 0, got 0.0"),
        (["tradeoff", "--calibration", "0", "--no-progress"], "`--calibration` must be >= 1, got 0"),
        (["tradeoff", "--calibration", "100000", "--no-progress"], "`--calibration` must be in 1..1257 (the training samples of digits_mlp), got 100000"),
        (["tradeoff", "--engines", "nope", "--no-progress"], "unknown backend(s) ['nope']"),
        (["tradeoff", "--ks", "0", "--no-progress"], "`--ks` must be >= 1, got 0"),
        (["tradeoff", "--models", "cifar", "--no-progress"], "`--models` must be one of 'digits_mlp', 'digits_cnn', 'mnist1d_mlp', got 'cifar'"),
    ],
)
def test_cli_prints_one_error_line_and_exits_2(argv, fragment, files, capsys, tmp_path):
    argv = [a.format(**files) for a in argv]
    if argv[0] == "tradeoff":
        argv += ["--out", str(tmp_path / "tradeoff")]
    assert main(argv) == 2
    _one_line_error(capsys, fragment)
    assert not (tmp_path / "tradeoff").exists()  # refused before any solve or output


# ============================================================================================= fuzz
HUGE = [2**31, 2**63, -(2**63) - 1, 10**100, 10**400, -(10**400)]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True), st.complex_numbers(), st.text(max_size=4), st.binary(max_size=4),
    st.sampled_from([object(), Ellipsis, np.float64("nan"), np.int64(-1), np.bool_(True), type, print, slice(1, 2)]),
)
DTYPES = st.sampled_from([np.float64, np.float32, np.int64, np.int8, np.uint8, np.bool_, np.complex128, "<U3", "S2",
                          "datetime64[s]", "timedelta64[s]"])
ARRAYS = st.one_of(
    hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)),
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
               elements=st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e308, -1e308, 5e-324])),
    hnp.arrays(object, hnp.array_shapes(min_dims=1, max_dims=2, max_side=3), elements=SCALARS),
    hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=6), elements=st.integers(-3, 4)),
)
GARBAGE = st.recursive(
    st.one_of(SCALARS, ARRAYS),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=3), inner, max_size=3), st.sets(st.integers(), max_size=3)),
    max_leaves=6,
)
# CI runs 60 derandomized examples per test; REPURPOSE_FUZZ_EXAMPLES=5000 runs a deeper, randomized campaign.
_DEEP = int(os.environ.get("REPURPOSE_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_DEEP or 60, derandomize=not _DEEP,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


def only_repurpose_errors(call, *args, **kwargs):
    """Call; a RepurposeError is a fine answer to garbage, anything else escapes and fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow warnings of extreme but finite numbers are not the point
        try:
            return call(*args, **kwargs)
        except RepurposeError:
            return None


def _layers(slot: str, value):
    W = np.ones((2, 3))
    return {
        "Dense.W": lambda: ro.Dense(value),
        "Dense.b": lambda: ro.Dense(W, value),
        "Conv2d.W": lambda: ro.Conv2d(value),
        "Conv2d.stride": lambda: ro.Conv2d(np.ones((1, 1, 2, 2)), stride=value),
        "Conv2d.padding": lambda: ro.Conv2d(np.ones((1, 1, 2, 2)), padding=value),
        "MaxPool2d.kernel_size": lambda: ro.MaxPool2d(value),
        "AvgPool2d.stride": lambda: ro.AvgPool2d(2, stride=value),
        "Network.layers": lambda: ro.Network(value, input_shape=(3,)),
        "Network.input_shape": lambda: ro.Network([ro.Dense(W)], input_shape=value),
        "Network.layers[]": lambda: ro.Network([ro.Dense(W), value, ro.Dense(np.ones((1, 2)))], input_shape=(3,)),
        "forward.X": lambda: _net().forward(value),
        "trace.X": lambda: _net().trace(value),
    }[slot]


@FUZZ
@given(slot=st.sampled_from(["Dense.W", "Dense.b", "Conv2d.W", "Conv2d.stride", "Conv2d.padding", "MaxPool2d.kernel_size",
                             "AvgPool2d.stride", "Network.layers", "Network.input_shape", "Network.layers[]", "forward.X",
                             "trace.X"]), value=GARBAGE)
def test_fuzz_layers_and_networks(slot, value):
    only_repurpose_errors(_layers(slot, value))


CLUSTER_FIELDS = ["k", "speed", "flop_rate", "flops_capacity", "param_capacity", "bandwidth", "latency", "dtype_bytes"]


@FUZZ
@given(field=st.sampled_from(CLUSTER_FIELDS), value=GARBAGE)
def test_fuzz_cluster(field, value):
    cluster = only_repurpose_errors(ro.Cluster, **({"k": 2} | {field: value}))
    if cluster is not None:  # whatever was accepted is usable
        assert 1 <= cluster.k <= 1024 and cluster.bandwidth.shape == (cluster.k, cluster.k)
        only_repurpose_errors(ro.simulate, _net(), [None, [0, 0, 1, 1], [0, 1]], cluster)


@FUZZ
@given(field=st.sampled_from(["network", "cluster", "input_placement", "output", "imbalance", "objective"]), value=GARBAGE)
def test_fuzz_partition_problem(field, value):
    args = {"network": _net(), "cluster": ro.Cluster(k=2)} | {field: value}
    problem = only_repurpose_errors(ro.PartitionProblem, **args)
    if problem is not None:
        only_repurpose_errors(ro.solve, problem, backend="direct", verify=True)


@FUZZ
@given(field=st.sampled_from(["network", "cluster", "calibration", "input_placement", "output", "imbalance",
                              "tolerance", "fit"]), value=GARBAGE)
def test_fuzz_restructure_problem(field, value):
    args = {"network": _net(), "cluster": ro.Cluster(k=2), "calibration": np.ones((5, 3)), "tolerance": 0.1} | {field: value}
    only_repurpose_errors(ro.RestructureProblem, **args)


@FUZZ
@given(field=st.sampled_from(["inputs", "targets", "layer", "output_placement", "cluster", "input_placement", "tolerance",
                              "comm_budget", "input_message_size", "nnz_budget"]), value=GARBAGE)
def test_fuzz_pruning_problem(field, value):
    layer = ro.Dense(np.arange(24.0).reshape(4, 6) % 5 - 2)
    X = np.linspace(-1, 1, 60).reshape(10, 6)
    args = dict(inputs=X, targets=layer.apply(X), layer=layer, output_placement=[0, 0, 1, 1], cluster=ro.Cluster(k=2),
                input_placement=[0, 0, 0, 1, 1, 1], tolerance=0.1)
    if field == "comm_budget":
        args["tolerance"] = None
    only_repurpose_errors(ro.PruningProblem, **(args | {field: value}))


@FUZZ
@given(field=st.sampled_from(["problem", "backend", "time_limit", "seed", "options"]), value=GARBAGE)
def test_fuzz_solve(field, value):
    if field == "options" and isinstance(value, dict) and not value:
        value = {"no such option": 1}  # an empty dict is valid; garbage option *values* are each backend's business
    args = {"problem": ro.PartitionProblem(_net(), ro.Cluster(k=2)), "backend": "direct"} | {field: value}
    if field == "time_limit" and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1e6:
        return  # an absurdly long but valid limit: see test_extreme_seeds_and_time_limits below
    only_repurpose_errors(ro.solve, args.pop("problem"), **args)


PLACEMENTS = st.one_of(GARBAGE, st.lists(st.integers(-2, 3), max_size=6), st.lists(st.floats(-1, 3), max_size=6))


@FUZZ
@given(field=st.sampled_from(["network", "assignment", "assignment[0]", "assignment[1]", "assignment[2]", "cluster", "X",
                              "output", "input_placement"]), value=PLACEMENTS)
def test_fuzz_simulate(field, value):
    assignment = [None, [0, 0, 1, 1], [0, 1]]
    args = {"network": _net(), "assignment": assignment, "cluster": ro.Cluster(k=2)}
    if field.startswith("assignment["):
        assignment[int(field[-2])] = value
    else:
        args[field] = value
    report = only_repurpose_errors(ro.simulate, **args)
    if report is not None:
        assert np.isfinite(report.comm_scalars) and report.comm_scalars >= 0


@FUZZ
@given(field=st.sampled_from(["problem", "solution", "status", "objective", "bound", "gap", "assignment", "network",
                              "report", "cluster"]), value=PLACEMENTS)
def test_fuzz_verify(field, value, solved):
    problem, sol = solved
    if field == "problem":
        args = (value, sol)
    elif field == "solution":
        args = (problem, value)
    else:
        args = (problem, dataclasses.replace(sol, **{field: value}))
    check = only_repurpose_errors(ro.verify, *args)
    assert check is None or isinstance(check, ro.VerificationReport)
    if check is not None and field in ("status", "objective") and not isinstance(value, (ro.Status, int, float)):
        assert not check.ok  # a status or objective of the wrong kind never verifies


@FUZZ
@given(which=st.sampled_from(["solution", "X"]), value=GARBAGE)
def test_fuzz_certify(which, value, solved):
    sol = solved[1]
    args = (value, np.ones((2, 6))) if which == "solution" else (sol, value)
    result = only_repurpose_errors(certify, *args)
    if result is not None:
        assert result.dtype == bool and result.ndim == 1


@FUZZ
@given(call=st.sampled_from(["Network.load", "load_solution", "Cluster.load", "save_solution.path", "save_solution.solution",
                             "Network.save", "Cluster.save", "zoo.load", "load_export.directory", "load_export.workers",
                             "export.solution", "export.directory", "export.dtype", "from_sklearn", "from_torch",
                             "from_torch.input_shape"]),
       value=GARBAGE)
def test_fuzz_loaders_savers_and_importers(call, value, solved, tmp_path):
    sol = solved[1]
    if isinstance(value, str) and value not in ("", ".", ".."):  # keep every file the fuzz writes inside tmp_path
        value = str(tmp_path / re.sub(r"[^A-Za-z0-9_.-]", "_", value))
    calls = {
        "Network.load": lambda: ro.Network.load(value),
        "load_solution": lambda: ro.load_solution(value),
        "Cluster.load": lambda: ro.Cluster.load(value),
        "save_solution.path": lambda: ro.save_solution(sol, value),
        "save_solution.solution": lambda: ro.save_solution(value, tmp_path / "s.npz"),
        "Network.save": lambda: _net().save(value),
        "Cluster.save": lambda: ro.Cluster(k=2).save(value),
        "zoo.load": lambda: None if isinstance(value, str) and value in zoo.MODELS else zoo.load(value, cache=False),
        "load_export.directory": lambda: load_export(value),
        "load_export.workers": lambda: load_export(export(sol, tmp_path / "exp"), workers=value),
        "export.solution": lambda: export(value, tmp_path / "exp"),
        "export.directory": lambda: export(sol, value),
        "export.dtype": lambda: export(sol, tmp_path / "exp", dtype=value),
        "from_sklearn": lambda: ro.Network.from_sklearn(value),
        "from_torch": lambda: ro.Network.from_torch(value),
        "from_torch.input_shape": lambda: _from_torch(value),
    }
    only_repurpose_errors(calls[call])


def _from_torch(input_shape):
    torch = pytest.importorskip("torch")
    return ro.Network.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2)), input_shape=input_shape)


@settings(FUZZ, max_examples=_DEEP or 50)
@given(data=st.data())
def test_fuzz_damaged_files_never_load_silently_wrong(data, tmp_path_factory):
    """Random byte flips and truncations: either a FormatError, or exactly the object that was saved."""
    d = tmp_path_factory.mktemp("damaged")
    net = random_dense_network(np.random.default_rng(3), [4, 5, 3])
    raw = bytearray(net.save(d / "net.npz").read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        if len(raw) < 2:
            break
        if data.draw(st.booleans()):
            raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
        else:
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    (d / "damaged.npz").write_bytes(bytes(raw))
    try:
        loaded = ro.Network.load(d / "damaged.npz")
    except ro.FormatError:
        return
    for a, b in zip(net.linear_layers, loaded.linear_layers, strict=True):  # the damage missed every byte that matters
        assert a.W.tobytes() == b.W.tobytes() and a.b.tobytes() == b.b.tobytes()
    assert [layer.to_config() for layer in loaded.layers] == [layer.to_config() for layer in net.layers]


ARGS = st.lists(st.one_of(st.sampled_from(["--k", "--cluster", "--assignment", "--input", "--input-placement", "--output",
                                           "2", "0", "-1", "x", "free", "gather", "{solution}", "{binary}", "{complex}",
                                           "{dir}", "nan", "1e999", ""]),
                          st.text(alphabet="ab-=.0:", max_size=6)), max_size=5)


@settings(FUZZ, max_examples=_DEEP or 50)
@given(args=ARGS)
def test_fuzz_cli_simulate_and_backends(args, files, capsys):
    for command in (["simulate", "{solution}"], ["simulate"], ["backends"]):
        argv = [a.format(**files) for a in command + args]
        code = main(argv)  # nothing may escape: a RepurposeError or OSError becomes exit code 2
        err = capsys.readouterr().err
        assert code in (0, 2), (argv, code, err)
        assert "Traceback" not in err
        if code == 2 and err.strip():
            assert "error:" in err.strip().splitlines()[-1], err


# ============================================================ bugs found by fuzzing, kept as regression tests
def test_ragged_comm_budget_is_an_invalid_problem():
    with raises(ro.InvalidProblemError, "`comm_budget`"):
        ro.RestructureProblem(_net(), ro.Cluster(k=2), calibration=np.ones((5, 3)), comm_budget=[1, [2]])


def test_solve_verify_flag_must_be_a_bool():
    with raises(ro.InvalidParameterError, "`verify` must be True, False or None, got array"):
        ro.solve(ro.PartitionProblem(_net(), ro.Cluster(k=2)), backend="direct", verify=np.ones(2))


def test_list_backends_flag_must_be_a_bool():
    with raises(ro.InvalidParameterError, "`available_only` must be True or False"):
        ro.list_backends(np.ones(2))


def test_calibration_that_overflows_is_refused_up_front():
    with raises(ro.InvalidProblemError, "`calibration`"):
        ro.RestructureProblem(_net(), ro.Cluster(k=2), calibration=np.full((5, 3), 1e300), tolerance=0.1)


def test_a_huge_tolerance_is_simply_loose():
    problem = ro.RestructureProblem(_net(), ro.Cluster(k=2), calibration=np.ones((5, 3)), tolerance=1e300)
    assert ro.solve(problem, backend="direct").status.has_solution


@pytest.mark.parametrize("backend", ["greedy", "munkres", "hypergraph"])
def test_an_infeasible_cascade_is_a_status_for_partition_engines(backend, monkeypatch):
    from repurpose_opt.solvers import restructure_engine
    from repurpose_opt.solvers.base import BackendResult

    def infeasible(problem, *args, **kwargs):  # what run_cascade returns when a layer's tolerance is out of reach
        return BackendResult(ro.Status.INFEASIBLE, message="layer 2: tolerance 0 cannot be met",
                             stats={"infeasible_layer": 2, "smallest_error": 0.3})

    monkeypatch.setattr(restructure_engine, "run_cascade", infeasible)
    problem = ro.RestructureProblem(_net(), ro.Cluster(k=2), calibration=np.ones((5, 3)), tolerance=0.1)
    assert ro.solve(problem, backend=backend, seed=0).status is ro.Status.INFEASIBLE


def test_extreme_seeds_and_time_limits():
    problem = ro.PartitionProblem(_net(), ro.Cluster(k=2))
    failures = []
    for backend in ("ortools", "cvxpy", "hypergraph"):
        for kwargs in ({"seed": 2**31}, {"time_limit": 1e10}):
            try:
                ro.solve(problem, backend=backend, **kwargs)
            except ro.InvalidParameterError as exc:
                assert next(iter(kwargs)) in str(exc)
            except ro.SolverError as exc:
                failures.append(f"{backend} {kwargs}: {exc}")
    assert not failures, failures


@pytest.mark.parametrize(("backend", "options"), [("greedy", {"max_sweeps": "many"}), ("munkres", {"max_sweeps": None}),
                                                  ("random", {"attempts": "x"}), ("bruteforce", {"max_pairs": None})])
def test_option_values_are_validated(backend, options):
    with raises(ro.InvalidParameterError, f"`{next(iter(options))}`"):
        ro.solve(ro.PartitionProblem(_net(), ro.Cluster(k=2)), backend=backend, options=options)


def test_fuzz_covers_every_cluster_field():
    """A field added to Cluster later is fuzzed too, or this fails."""
    assert sorted(CLUSTER_FIELDS) == sorted(f.name for f in dataclasses.fields(ro.Cluster))
