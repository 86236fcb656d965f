"""The one result type every backend returns, and its persistence."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _io
from .cluster import Cluster
from .errors import FormatError, InvalidParameterError
from .network import Network

__all__ = ["Status", "Solution", "save_solution", "load_solution"]

_FORMAT = "repurpose-opt/solution"
_FORMAT_VERSION = 1


class Status(str, enum.Enum):
    """Outcome of a solve. ``OPTIMAL`` is only ever reported with a proof (bound equal to the objective)."""

    OPTIMAL = "OPTIMAL"
    FEASIBLE = "FEASIBLE"
    INFEASIBLE = "INFEASIBLE"
    NO_SOLUTION = "NO_SOLUTION"
    ERROR = "ERROR"

    @property
    def has_solution(self) -> bool:
        return self in (Status.OPTIMAL, Status.FEASIBLE)


@dataclass(frozen=True, eq=False)
class Solution:
    """A solve's result, identical in shape for every backend.

    Attributes
    ----------
    status : Status
    objective : float or None
        In problem units (scalars per sample, or seconds for the latency objective), recounted by the
        simulator, never taken from the backend.
    bound : float or None
        A proven lower bound on the optimum, when the backend has one.
    gap : float or None
        ``(objective - bound) / max(|objective|, 1e-12)``.
    backend : str
    assignment : tuple of int arrays, or None
        ``assignment[l][i]`` = worker of unit i of layer l; index 0 is the input (all -1 if replicated).
    network : Network or None
        The (possibly restructured) network the assignment applies to.
    report : SimulationReport or None
        The simulator's measurement of this solution.
    guarantee : Guarantee or None
        Output-error guarantee of a restructured network.
    timings : dict
        Wall-clock seconds (``"solve"``: inside the backend, ``"total"``: including the recount).
    message : str
        Human-readable detail (why infeasible, which limit stopped the search, ...).
    stats : dict
        Backend-specific figures (nodes, iterations, rounding error of integer scaling, ...).
    cluster : Cluster or None
        The cluster the solution was measured on.
    output : str
        ``"gather"`` or ``"distributed"``.
    seed : int or None
    """

    status: Status
    objective: float | None
    bound: float | None
    gap: float | None
    backend: str
    assignment: tuple[np.ndarray, ...] | None
    network: Network | None
    report: Any = field(default=None, repr=False)
    guarantee: Any = field(default=None, repr=False)
    timings: dict[str, float] = field(default_factory=dict)
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    cluster: Cluster | None = field(default=None, repr=False)
    output: str = "gather"
    seed: int | None = None

    def __repr__(self) -> str:
        obj = "None" if self.objective is None else f"{self.objective:.6g}"
        bound = "None" if self.bound is None else f"{self.bound:.6g}"
        return f"Solution(status={self.status.value}, objective={obj}, bound={bound}, backend={self.backend!r})"


def save_solution(solution: Solution, path: str | os.PathLike) -> Path:
    """Write a solution (assignment, network, cluster, statuses) to a checksummed ``.npz``.

    The simulation report is not stored: :func:`load_solution` recomputes it with the simulator, which
    is deterministic, so nothing a backend claimed survives a round trip unchecked.
    """
    if not isinstance(solution, Solution):
        raise InvalidParameterError(f"`solution` must be a repurpose_opt.Solution, got {type(solution).__name__}")
    arrays: dict[str, np.ndarray] = {}
    header: dict[str, Any] = {
        "status": solution.status.value,
        "objective": solution.objective,
        "bound": solution.bound,
        "gap": solution.gap,
        "backend": solution.backend,
        "timings": solution.timings,
        "message": solution.message,
        "stats": _jsonable(solution.stats),
        "cluster": None if solution.cluster is None else solution.cluster.to_dict(),
        "output": solution.output,
        "seed": solution.seed,
        "n_assignment": None if solution.assignment is None else len(solution.assignment),
        "guarantee": None if solution.guarantee is None else solution.guarantee.to_dict(),
    }
    if solution.assignment is not None:
        for l, placement in enumerate(solution.assignment):
            arrays[f"assignment{l}"] = np.asarray(placement, dtype=np.int64)
    if solution.network is not None:
        header["network"], net_arrays = solution.network.to_payload()
        arrays.update({f"network.{key}": value for key, value in net_arrays.items()})
    return _io.write_npz(path, _FORMAT, _FORMAT_VERSION, header, arrays)


def load_solution(path: str | os.PathLike) -> Solution:
    """Read a solution written by :func:`save_solution`; its report is recomputed by the simulator."""
    from .simulator import simulate

    header, arrays = _io.read_npz(path, _FORMAT, _FORMAT_VERSION)
    try:
        network = None
        if header.get("network") is not None:
            prefix = "network."
            net_arrays = {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
            network = Network.from_payload(header["network"], net_arrays, where=repr(str(path)))
        assignment = None
        if header["n_assignment"] is not None:
            assignment = tuple(_frozen(arrays[f"assignment{l}"]) for l in range(header["n_assignment"]))
        cluster = None if header["cluster"] is None else Cluster.from_dict(header["cluster"])
        guarantee = None
        if header.get("guarantee") is not None:
            from .guarantee import Guarantee

            guarantee = Guarantee.from_dict(header["guarantee"])
        report = None
        if assignment is not None and network is not None and cluster is not None:
            report = simulate(network, assignment, cluster, output=header["output"])
        return Solution(
            status=Status(header["status"]),
            objective=header["objective"],
            bound=header["bound"],
            gap=header["gap"],
            backend=header["backend"],
            assignment=assignment,
            network=network,
            report=report,
            guarantee=guarantee,
            timings=dict(header["timings"]),
            message=header["message"],
            stats=dict(header["stats"]),
            cluster=cluster,
            output=header["output"],
            seed=header["seed"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{str(path)!r} has a malformed solution description: {exc!r}") from exc


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, dtype=np.int64)
    array.flags.writeable = False
    return array


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, enum.Enum):
        return value.value
    return value
