"""Bad input (SPEC §7) raises the right RepurposeError subclass with a message naming the argument.

Each case pins the message: the argument in backticks and what it must be. Covered: NaN/inf weights and
biases, shape mismatches, K < 1, non-integer K, K larger than a layer, negative budgets and tolerances,
wrong calibration shape, NaN/inf calibration, placements of the wrong length, range or type, unknown option
keys, unknown backends (listing the known and the installed ones), a backend that is not installed (naming
the extra), a backend that cannot solve a problem (saying why), and out-of-range solve arguments.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import repurpose_opt as ro
from repurpose_opt.errors import RepurposeError
from repurpose_opt.solvers import registry
from repurpose_opt.solvers.base import Backend, BackendResult
from repurpose_opt.solvers.registry import backend_names, register_backend, unregister_backend


def _net() -> ro.Network:
    return ro.Network([ro.Dense(np.ones((4, 3))), ro.ReLU(), ro.Dense(np.ones((2, 4)))], input_shape=(3,))


def _nan(shape, where=None):
    a = np.ones(shape)
    a[(0,) * len(shape) if where is None else where] = np.nan
    return a


def raises(error, message):
    assert issubclass(error, RepurposeError)
    return pytest.raises(error, match=re.escape(message))


# --------------------------------------------------------------------------------- layers, networks
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ro.Dense(_nan((2, 3), (0, 1))), "`W` must be finite, got 1 NaN or infinite entries"),
        (lambda: ro.Dense(np.full((2, 3), np.inf)), "`W` must be finite, got 6 NaN or infinite entries"),
        (lambda: ro.Dense(np.ones((2, 3)), [0.0, np.inf]), "`b` must be finite, got 1 NaN or infinite entries"),
        (lambda: ro.Dense(np.ones((2, 3)), np.ones(3)), "`b` must have shape (2,), got (3,)"),
        (lambda: ro.Dense(np.ones(3)), "`W` must be a 2-dimensional array, got shape (3,)"),
        (lambda: ro.Dense(np.ones((0, 3))), "`W` must not be empty, got shape (0, 3)"),
        (lambda: ro.Dense([["a", "b"]]), "`W` must be an array of real numbers"),
        (lambda: ro.Conv2d(_nan((2, 1, 3, 3))), "`W` must be finite, got 1 NaN or infinite entries"),
        (lambda: ro.Conv2d(np.ones((2, 1, 3))), "`W` must be a 4-dimensional array, got shape (2, 1, 3)"),
        (lambda: ro.Conv2d(np.ones((2, 1, 3, 3)), stride=0), "`stride` must be >= 1, got 0"),
        (lambda: ro.Conv2d(np.ones((2, 1, 3, 3)), padding=-1), "`padding` must be >= 0, got -1"),
        (lambda: ro.Conv2d(np.ones((2, 1, 3, 3)), stride=(1, 2, 3)), "`stride` must be an integer or a pair of integers"),
        (lambda: ro.MaxPool2d(0), "`kernel_size` must be >= 1, got 0"),
        (lambda: ro.AvgPool2d(2, stride=1.5), "`stride` must be an integer, got 1.5"),
        (lambda: ro.Network([ro.Dense(np.ones((4, 3))), ro.Dense(np.ones((2, 5)))], input_shape=(3,)),
         "`layers[1]` (Dense) expects 5 inputs but receives 4"),
    ],
)
def test_bad_layers_and_networks(build, message):
    with raises(ro.InvalidProblemError, message):
        build()


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.ones((5, 4)), "`X` must have shape (N, 3), got (5, 4)"),
        (np.ones(3), "`X` must be a 2 or 4-dimensional array, got shape (3,)"),
        (_nan((5, 3)), "`X` must be finite, got 1 NaN or infinite entries"),
        (np.ones((0, 3)), "`X` must not be empty, got shape (0, 3)"),
    ],
)
def test_bad_forward_input(X, message):
    with raises(ro.InvalidProblemError, message):
        _net().forward(X)


# ------------------------------------------------------------------------------------------ cluster
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "`k` must be >= 1, got 0"),
        ({"k": -2}, "`k` must be >= 1, got -2"),
        ({"k": 2.5}, "`k` must be an integer, got 2.5"),
        ({"k": 2.0}, "`k` must be an integer, got 2.0"),
        ({"k": "2"}, "`k` must be an integer, got '2'"),
        ({"k": True}, "`k` must be an integer, got True"),
        ({"k": 2, "speed": [1.0, 2.0, 3.0]}, "`speed` must be a scalar or have shape (2,), got (3,)"),
        ({"k": 2, "speed": [1.0, 0.0]}, "`speed` must be > 0 for every worker, got minimum 0.0"),
        ({"k": 2, "speed": [1.0, np.nan]}, "`speed` must be finite"),
        ({"k": 2, "flops_capacity": -1.0}, "`flops_capacity` must be > 0 for every worker"),
        ({"k": 2, "param_capacity": [1.0, 2.0, 3.0]}, "`param_capacity` must be a scalar or have shape (2,)"),
        ({"k": 2, "bandwidth": 0.0}, "`bandwidth` must be > 0 on every link"),
        ({"k": 2, "bandwidth": np.ones((3, 3))}, "`bandwidth` must be a scalar or a 2x2 matrix, got (3, 3)"),
        ({"k": 2, "bandwidth": np.inf}, "`bandwidth` must be finite"),
        ({"k": 2, "latency": -1e-3}, "`latency` must be >= 0 on every link"),
        ({"k": 2, "flop_rate": 0}, "`flop_rate` must be > 0, got 0.0"),
        ({"k": 2, "flop_rate": float("nan")}, "`flop_rate` must be finite, got nan"),
        ({"k": 2, "dtype_bytes": 0}, "`dtype_bytes` must be >= 1, got 0"),
    ],
)
def test_bad_clusters(kwargs, message):
    with raises(ro.InvalidProblemError, message):
        ro.Cluster(**kwargs)


# ------------------------------------------------------------------------------------------ problems
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cluster": ro.Cluster(k=3)}, "`cluster.k` = 3 is larger than layer 2, which has 2 units"),
        ({"cluster": ro.Cluster(k=2), "input_placement": "free", "network":
          ro.Network([ro.Dense(np.ones((4, 1)))], input_shape=(1,))},
         "`cluster.k` = 2 is larger than the input, which has 1 units"),
        ({"input_placement": "everywhere"}, "`input_placement` must be one of 'replicated', 'free', got 'everywhere'"),
        ({"input_placement": [0, 1]}, "`input_placement` must be a 1-D array of length 3, got shape (2,)"),
        ({"input_placement": [0, 1, 2]}, "`input_placement` must hold worker indices in 0..1, got values in 0..2"),
        ({"input_placement": [0, 1, -1]}, "`input_placement` must hold worker indices in 0..1, got values in -1..1"),
        ({"input_placement": [0.5, 1, 0]}, "`input_placement` must hold integers (worker indices), got dtype float64"),
        ({"output": "all"}, "`output` must be one of 'gather', 'distributed', got 'all'"),
        ({"imbalance": -0.1}, "`imbalance` must be >= 0.0, got -0.1"),
        ({"imbalance": "some"}, "`imbalance` must be a real number, got 'some'"),
        ({"objective": "energy"}, "`objective` must be one of 'volume', 'latency', got 'energy'"),
        ({"network": "net"}, "`network` must be a repurpose_opt.Network, got str"),
        ({"cluster": 4}, "`cluster` must be a repurpose_opt.Cluster, got int"),
    ],
)
def test_bad_partition_problems(kwargs, message):
    args = {"network": _net(), "cluster": ro.Cluster(k=2)} | kwargs
    with raises(ro.InvalidProblemError, message):
        ro.PartitionProblem(**args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"calibration": np.ones((10, 4))}, "`calibration` must have shape (N, 3), got (10, 4)"),
        ({"calibration": np.ones((10, 3, 1))}, "`calibration` must be a 2 or 4-dimensional array, got shape (10, 3, 1)"),
        ({"calibration": _nan((10, 3))}, "`calibration` must be finite, got 1 NaN or infinite entries"),
        ({"calibration": np.full((10, 3), -np.inf)}, "`calibration` must be finite, got 30 NaN or infinite entries"),
        ({"tolerance": -0.1}, "`tolerance` must be >= 0, got minimum -0.1"),
        ({"tolerance": [0.1, 0.1, 0.1]}, "`tolerance` must be a scalar or have one entry per linear layer (2), got shape (3,)"),
        ({"tolerance": None, "comm_budget": -1.0}, "`comm_budget` must be >= 0.0, got -1.0"),
        ({"tolerance": None, "comm_budget": [1.0, -1.0]}, "`comm_budget` must be >= 0, got minimum -1.0"),
        ({"comm_budget": 3.0}, "give exactly one of `tolerance` and `comm_budget`"),
        ({"cluster": ro.Cluster(k=3)}, "`cluster.k` = 3 is larger than layer 2, which has 2 units"),
    ],
)
def test_bad_restructure_problems(kwargs, message):
    args = {"network": _net(), "cluster": ro.Cluster(k=2), "calibration": np.ones((10, 3)), "tolerance": 0.1} | kwargs
    with raises(ro.InvalidProblemError, message):
        ro.RestructureProblem(**args)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rounds": -1}, "option `rounds` must be >= 0, got -1"),
        ({"importance": "yes"}, "option `importance` must be True or False, got 'yes'"),
        ({"joint_iterations": 1.5}, "option `joint_iterations`"),
        ({"joint_ridge": -1}, "option `joint_ridge` must be >= 0.0, got -1.0"),
        ({"joint_ridge": "strong"}, "option `joint_ridge` must be a real number, got 'strong' (or 'auto')"),
        ({"joint_boundary": -1}, "option `joint_boundary` must be >= 0, got -1"),
        ({"cascade_tolerance": -0.1}, "option `cascade_tolerance` must be >= 0, got minimum -0.1"),
        ({"cascade_tolerance": "tight"}, "option `cascade_tolerance` must be a number or one number per layer, got 'tight'"),
        ({"cascade_tolerance": [[0.1]]}, "option `cascade_tolerance` must be a 0 or 1-dimensional array, got shape (1, 1)"),
        ({"cascade_tolerance": [0.1, 0.1, 0.1]}, "option `cascade_tolerance` must be a scalar or have one entry per linear layer (2), got shape (3,)"),
        ({"cascade_tolerance": [0.05, 0.2]}, "option `cascade_tolerance` must not exceed the problem's tolerance: layer 2 has 0.2 > 0.1"),
        ({"distill_steps": -5}, "option `distill_steps` must be >= 0, got -5"),
        ({"distill_batch": 2}, "option `distill_batch` must be >= 4, got 2"),
        ({"progress": 1}, "option `progress` must be True or False, got 1"),
        ({"partitioners": ("nope",)}, "option `partitioners` must be a sequence of partition backend names"),
        ({"partitioners": 3}, "option `partitioners` must be a sequence of partition backend names"),
    ],
)
def test_bad_repurpose_options(options, message):
    problem = ro.RestructureProblem(_net(), ro.Cluster(k=2), calibration=np.ones((10, 3)), tolerance=0.1)
    with raises(ro.InvalidParameterError, message):
        ro.solve(problem, backend="repurpose", options=options)


def test_cascade_tolerance_needs_tolerance_mode():
    problem = ro.RestructureProblem(_net(), ro.Cluster(k=2), calibration=np.ones((10, 3)), comm_budget=4.0)
    with raises(ro.InvalidParameterError, "option `cascade_tolerance` needs a problem with a `tolerance` (this one has a `comm_budget`)"):
        ro.solve(problem, backend="repurpose", options={"cascade_tolerance": 0.1})


def test_joint_boundary_needs_a_classifier():
    regressor = ro.Network([ro.Dense(np.ones((4, 3))), ro.ReLU(), ro.Dense(np.ones((1, 4)))], input_shape=(3,))
    problem = ro.RestructureProblem(regressor, ro.Cluster(k=1), calibration=np.ones((10, 3)), tolerance=0.1)
    with raises(ro.InvalidParameterError, "option `joint_boundary` needs a classifier (at least 2 outputs); this network has 1 output"):
        ro.solve(problem, backend="repurpose", options={"joint_boundary": 10})


def test_bad_pruning_problems(rng):
    layer = ro.Dense(rng.normal(size=(4, 6)))
    X = rng.normal(size=(20, 6))
    args = dict(inputs=X, targets=layer.apply(X), layer=layer, output_placement=[0, 0, 1, 1], cluster=ro.Cluster(k=2))
    with raises(ro.InvalidProblemError, "`comm_budget` must be >= 0.0, got -2.0"):
        ro.PruningProblem(**args, comm_budget=-2.0)
    with raises(ro.InvalidProblemError, "`tolerance` must be >= 0.0, got -0.5"):
        ro.PruningProblem(**args, tolerance=-0.5)
    with raises(ro.InvalidProblemError, "`targets` must have shape (20, 4), got (20, 3)"):
        ro.PruningProblem(**(args | {"targets": np.ones((20, 3))}), tolerance=0.1)
    with raises(ro.InvalidProblemError, "`output_placement` must be a 1-D array of length 4, got shape (3,)"):
        ro.PruningProblem(**(args | {"output_placement": [0, 1, 1]}), tolerance=0.1)
    with raises(ro.InvalidProblemError, "`inputs` must be finite"):
        ro.PruningProblem(**(args | {"inputs": _nan((20, 6))}), tolerance=0.1)


# ---------------------------------------------------------------------------------------- simulate
@pytest.mark.parametrize(
    ("assignment", "kwargs", "message"),
    [
        ([None, [0, 0, 1]], {}, "`assignment` must hold 3 placements (input + 2 layers), got 2"),
        (np.zeros((3, 4), int), {}, "`assignment` must be a sequence of 3 placements (index 0 = input), got ndarray"),
        ([None, [0, 0, 1], [0, 1]], {}, "`assignment[1]` must be a 1-D array of length 4, got shape (3,)"),
        ([None, [0, 0, 1, 1, 0], [0, 1]], {}, "`assignment[1]` must be a 1-D array of length 4, got shape (5,)"),
        ([None, [0, 0, 1, 2], [0, 1]], {}, "`assignment[1]` must hold worker indices in 0..1, got values in 0..2"),
        ([None, [0, 0, 1, -3], [0, 1]], {}, "`assignment[1]` must hold worker indices in 0..1, got values in -3..1"),
        ([None, [0, 0, 1, 1], [0.5, 1]], {}, "`assignment[2]` must hold integers (worker indices), got dtype float64"),
        ([None, [0, 0, 1, 1], ["a", "b"]], {}, "`assignment[2]` must hold integers (worker indices), got dtype <U1"),
        ([[0, 1], [0, 0, 1, 1], [0, 1]], {}, "`assignment[0]` must be a 1-D array of length 3, got shape (2,)"),
        ([None, [0, 0, 1, 1], [0, 1]], {"input_placement": "free"}, "`assignment[0]` must place every input unit"),
        ([None, [0, 0, 1, 1], [0, 1]], {"input_placement": "somewhere"},
         "`input_placement` must be 'replicated', 'free' or an array, got 'somewhere'"),
        ([[0, 0, 1], [0, 0, 1, 1], [0, 1]], {"input_placement": [0, 1, 1]},
         "`assignment[0]` must equal the fixed `input_placement`"),
        ([None, [0, 0, 1, 1], [0, 1]], {"output": "everyone"}, "`output` must be one of 'gather', 'distributed', got 'everyone'"),
    ],
)
def test_bad_simulate_arguments(assignment, kwargs, message):
    with raises(ro.InvalidParameterError, message):
        ro.simulate(_net(), assignment, ro.Cluster(k=2), **kwargs)


def test_bad_simulate_objects_and_data():
    good = [None, [0, 0, 1, 1], [0, 1]]
    with raises(ro.InvalidParameterError, "`network` must be a repurpose_opt.Network, got list"):
        ro.simulate([], good, ro.Cluster(k=2))
    with raises(ro.InvalidParameterError, "`cluster` must be a repurpose_opt.Cluster, got int"):
        ro.simulate(_net(), good, 2)
    with raises(ro.InvalidProblemError, "`X` must be finite, got 1 NaN or infinite entries"):
        ro.simulate(_net(), good, ro.Cluster(k=2), X=_nan((4, 3)))
    with raises(ro.InvalidProblemError, "`X` must have shape (N, 3), got (4, 2)"):
        ro.simulate(_net(), good, ro.Cluster(k=2), X=np.ones((4, 2)))


# ------------------------------------------------------------------------------------------- solve
def _problem() -> ro.PartitionProblem:
    return ro.PartitionProblem(_net(), ro.Cluster(k=2))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"time_limit": -1}, ro.InvalidParameterError, "`time_limit` must be > 0, got -1.0"),
        ({"time_limit": 0}, ro.InvalidParameterError, "`time_limit` must be > 0, got 0.0"),
        ({"time_limit": float("nan")}, ro.InvalidParameterError, "`time_limit` must be finite, got nan"),
        ({"time_limit": "1s"}, ro.InvalidParameterError, "`time_limit` must be a real number, got '1s'"),
        ({"seed": -1}, ro.InvalidParameterError, "`seed` must be >= 0, got -1"),
        ({"seed": 1.5}, ro.InvalidParameterError, "`seed` must be an integer, got 1.5"),
        ({"options": {"nope": 1}}, ro.InvalidParameterError,
         "`options` has unknown key(s) ['nope'] for backend 'bruteforce'; valid options: max_layer_states, max_pairs, "
         "symmetry_breaking"),
        ({"options": {"nope": 1, "max_pairs": 5, "also": 2}}, ro.InvalidParameterError, "unknown key(s) ['also', 'nope']"),
        ({"options": [("max_pairs", 5)]}, ro.InvalidParameterError, "`options` must be a dict, got list"),
        ({"backend": 3}, ro.UnknownBackendError, "`backend` must be a backend name (str), got int"),
    ],
)
def test_bad_solve_arguments(kwargs, error, message):
    args = {"backend": "bruteforce"} | kwargs
    with raises(error, message):
        ro.solve(_problem(), **args)


def test_bad_problem_for_solve():
    with raises(ro.InvalidParameterError, "`problem` must be one of PartitionProblem, RestructureProblem, PruningProblem, got str"):
        ro.solve("problem")


def test_unknown_backend_lists_known_and_installed():
    with pytest.raises(ro.UnknownBackendError) as info:
        ro.solve(_problem(), backend="gurobi")
    message = str(info.value)
    known, installed = message.split("; known backends: ")[1].split("; installed: ")
    assert message.startswith("`backend` 'gurobi' is unknown")
    assert known.split(", ") == backend_names()
    assert installed.split(", ") == [row["name"] for row in ro.list_backends(available_only=True)]
    assert {"bruteforce", "direct", "random"} <= set(installed.split(", "))


class _NeedsMissingModule(Backend):
    name = "needs-missing"
    requires = ("numpy", "repurpose_opt_no_such_module")
    extra = "fancy"
    problem_types = ("PartitionProblem",)

    def solve(self, problem, *, time_limit, seed, options):  # pragma: no cover - never reached
        raise AssertionError("a backend that is not installed must not run")


class _DenseOnly(Backend):
    name = "dense-only"
    problem_types = ("PartitionProblem",)

    def can_solve(self, problem):
        reason = super().can_solve(problem)
        if reason is None and any(layer.kind != "dense" for layer in problem.network.structure):
            return "it places dense layers only, and this network has a Conv2d layer"
        return reason

    def solve(self, problem, *, time_limit, seed, options):  # pragma: no cover - never reached
        return BackendResult(ro.Status.NO_SOLUTION)


@pytest.fixture
def registered():
    names = []

    def add(cls):
        register_backend(cls)
        names.append(cls.name)

    yield add
    for name in names:
        unregister_backend(name)


def test_backend_not_installed_names_the_extra(registered):
    registered(_NeedsMissingModule)
    with raises(ro.BackendUnavailableError, "backend 'needs-missing' needs repurpose_opt_no_such_module, which is not "
                                             "installed: pip install 'repurpose-opt[fancy]'"):
        ro.solve(_problem(), backend="needs-missing")
    row = next(r for r in ro.list_backends() if r["name"] == "needs-missing")
    assert (row["available"], row["missing"], row["extra"]) == (False, ["repurpose_opt_no_such_module"], "fancy")
    assert "needs-missing" not in [r["name"] for r in ro.list_backends(available_only=True)]
    with pytest.raises(ro.UnknownBackendError) as info:
        ro.solve(_problem(), backend="nope")
    known, installed = str(info.value).split("; known backends: ")[1].split("; installed: ")
    assert "needs-missing" in known.split(", ") and "needs-missing" not in installed.split(", ")
    assert isinstance(ro.BackendUnavailableError("x"), ImportError)


def test_backend_that_cannot_solve_says_why(registered, rng):
    from repurpose_opt.testing import random_conv_network

    registered(_DenseOnly)
    conv = ro.PartitionProblem(random_conv_network(rng, channels=(2, 2, 2)), ro.Cluster(k=2))
    with raises(ro.BackendCannotSolveError, "backend 'dense-only' cannot solve this PartitionProblem: it places dense "
                                             "layers only, and this network has a Conv2d layer"):
        ro.solve(conv, backend="dense-only")
    restructure = ro.RestructureProblem(_net(), ro.Cluster(k=2), calibration=np.ones((5, 3)), tolerance=0.1)
    with raises(ro.BackendCannotSolveError, "backend 'random' cannot solve this RestructureProblem: it solves "
                                             "PartitionProblem only, not RestructureProblem"):
        ro.solve(restructure, backend="random")


def test_missing_builtin_modules_are_not_listed(monkeypatch):
    monkeypatch.setitem(registry.BUILTIN_BACKENDS, "ghost", "repurpose_opt.solvers.ghost_backend:Ghost")
    monkeypatch.setitem(registry.BUILTIN_BACKENDS, "phantom", "no_such_package.module:Phantom")
    names = backend_names()
    assert "ghost" not in names and "phantom" not in names
    assert all(row["name"] not in ("ghost", "phantom") for row in ro.list_backends())
    with raises(ro.UnknownBackendError, "`backend` 'ghost' is unknown"):
        ro.solve(_problem(), backend="ghost")


def test_register_backend_refuses_bad_classes():
    with raises(ro.InvalidParameterError, "`cls` must be a subclass of repurpose_opt.solvers.Backend"):
        register_backend(object)
    with raises(ro.InvalidParameterError, "`cls.name` 'bruteforce' is a built-in backend"):
        register_backend(type("Shadow", (Backend,), {"name": "bruteforce"}))
    with raises(ro.InvalidParameterError, "`cls.name` must be a non-empty string other than 'auto', got ''"):
        register_backend(type("Nameless", (Backend,), {}))
