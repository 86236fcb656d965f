"""The conformance suite ``repurpose_opt.testing.check_backend`` over every installed backend.

The backends come from ``list_backends(available_only=True)``, so a backend added to the registry (or
installed as a plug-in) is checked without touching this file; the template backend of
``repurpose_opt.solvers.template`` is checked too, registered the way a third-party backend would be.
The suite itself is tested: its hand-made optima agree with the brute-force oracle, and backends that
break the contract in different ways (a suboptimal "exact" backend, a nondeterministic one, one that
ignores balance, one that claims a wrong objective, one that refuses without a reason) are caught with a
message naming the check.
"""

from __future__ import annotations

import numpy as np
import pytest

import repurpose_opt as ro
from repurpose_opt.solvers.base import Backend, BackendResult
from repurpose_opt.solvers.placement import fixed_input
from repurpose_opt.solvers.registry import get_backend
from repurpose_opt.solvers.template import TemplateBackend
from repurpose_opt.testing import check_backend, conformance_instances, oracle_optimum

INSTALLED = [row["name"] for row in ro.list_backends(available_only=True)]


@pytest.mark.parametrize("name", INSTALLED)
def test_installed_backend_conforms(name):
    results = check_backend(name)
    checks = {r.check for r in results}
    assert {"declaration", "consistency", "optimum", "unknown-option"} <= checks or "refusal" in checks
    cls = get_backend(name)
    if "PartitionProblem" in cls.problem_types:
        assert {"verify", "determinism", "relabel", "time_limit"} <= checks
        assert any(r.check == "optimum" and r.instance == "dense-gather" for r in results) or any(
            r.check == "refusal" and r.instance == "dense-gather" for r in results)


def test_template_backend_conforms_as_a_third_party_class():
    results = check_backend(TemplateBackend)
    assert "template" not in ro.solvers.registry.backend_names()  # registered only for the run
    refused = {r.instance for r in results if r.check == "refusal"}
    assert refused == {"infeasible-flops"}  # it declares that it does not handle capacities


def test_hand_made_optima_agree_with_the_oracle():
    for instance in conformance_instances():
        if instance.optimum is None or instance.problem_type == "RestructureProblem":
            continue
        sol = ro.solve(instance.problem, backend="bruteforce", verify=True)
        assert sol.status is ro.Status.OPTIMAL and sol.objective == instance.optimum, instance.name
    infeasible = [i for i in conformance_instances() if not i.feasible]
    assert infeasible and all(ro.solve(i.problem, "bruteforce").status is ro.Status.INFEASIBLE for i in infeasible)
    assert all(oracle_optimum(i) is not None for i in conformance_instances("PartitionProblem") if i.feasible)


# ---------------------------------------------------------------------------------- broken backends
def _split(problem, shuffle_seed=None):
    """A balanced placement (contiguous, or shuffled with ``shuffle_seed``), honouring the input mode."""
    rng = np.random.default_rng(shuffle_seed)
    out = []
    for l, (n, cap) in enumerate(zip(problem.network.unit_counts, problem.capacities, strict=True)):
        first = fixed_input(problem)
        if l == 0 and first is not None:
            out.append(first)
            continue
        p = np.repeat(np.arange(problem.k), cap)[:n]
        out.append(rng.permutation(p) if shuffle_seed is not None else np.sort(p))
    return tuple(out)


class _Broken(Backend):
    problem_types = ("PartitionProblem",)

    def can_solve(self, problem):
        reason = super().can_solve(problem)
        if reason is None and (problem.cluster.flops_capacity is not None or problem.cluster.param_capacity is not None):
            return "no capacities"
        return reason


class _FakeExact(_Broken):
    name = "fake-exact"
    exact = True

    def solve(self, problem, *, time_limit, seed, options):
        return BackendResult(ro.Status.FEASIBLE, _split(problem))


class _Nondeterministic(_Broken):
    name = "nondeterministic"
    calls = 0

    def solve(self, problem, *, time_limit, seed, options):
        type(self).calls += 1
        return BackendResult(ro.Status.FEASIBLE, _split(problem, shuffle_seed=type(self).calls))


class _Unbalanced(_Broken):
    name = "unbalanced"

    def solve(self, problem, *, time_limit, seed, options):
        first = fixed_input(problem)
        zeros = tuple(np.zeros(n, dtype=np.int64) for n in problem.network.unit_counts)
        return BackendResult(ro.Status.FEASIBLE, ((first,) if first is not None else zeros[:1]) + zeros[1:])


class _WrongClaim(_Broken):
    name = "wrong-claim"

    def solve(self, problem, *, time_limit, seed, options):
        return BackendResult(ro.Status.FEASIBLE, _split(problem), objective=-1.0)


class _Mute(_Broken):
    name = "mute"

    def can_solve(self, problem):
        return ""


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (_FakeExact, "check 'optimum' failed on instance 'identity-free': exact backend returned FEASIBLE"),
        (_Nondeterministic, "check 'determinism' failed on instance 'identity-free': two solves with seed 0"),
        (_Unbalanced, "check 'verify' failed on instance 'identity-free': layer 0: worker 0 holds 4 units, capacity 2"),
        (_WrongClaim, "check 'solve' failed on instance 'identity-free': solve raised SolverError: backend "
                      "'wrong-claim' reported objective -1.0"),
        (_Mute, "check 'refusal' failed on instance 'identity-free': can_solve must return None or a reason"),
    ],
)
def test_the_suite_catches_broken_backends(cls, message):
    with pytest.raises(AssertionError, match=f"check_backend\\('{cls.name}'\\): " + message.replace("(", "\\(")):
        check_backend(cls, quick=True)
    assert cls.name not in ro.solvers.registry.backend_names()


def test_exactness_is_declared_per_problem_type():
    class Mixed(Backend):
        name = "mixed"
        problem_types = ("PartitionProblem", "PruningProblem")
        exact = ("PartitionProblem",)

    assert Mixed.is_exact("PartitionProblem") and not Mixed.is_exact("PruningProblem")
    assert not Mixed.is_exact("RestructureProblem") and not get_backend("direct").is_exact("PartitionProblem")
    assert get_backend("bruteforce").is_exact("PruningProblem")
    rows = {row["name"]: row for row in ro.list_backends()}
    assert rows["bruteforce"]["exact_for"] == ["PartitionProblem", "PruningProblem"] and rows["bruteforce"]["exact"]
    assert rows["random"]["exact_for"] == [] and not rows["random"]["exact"]

    class Confused(_Broken):
        name = "confused"
        exact = ("RestructureProblem",)

    with pytest.raises(AssertionError, match=r"check 'declaration' failed .* `exact` must be a bool or a tuple of its"):
        check_backend(Confused, quick=True)
