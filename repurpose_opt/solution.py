"""The one result type every backend returns, and its persistence."""

from __future__ import annotations

import enum
import numbers
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
    _check_fields(solution)
    arrays: dict[str, np.ndarray] = {}
    header: dict[str, Any] = {
        "status": solution.status.value,
        "objective": _io.jsonable(solution.objective),
        "bound": _io.jsonable(solution.bound),
        "gap": _io.jsonable(solution.gap),
        "backend": solution.backend,
        "timings": _io.jsonable(solution.timings),
        "message": solution.message,
        "stats": _io.jsonable(solution.stats),
        "cluster": None if solution.cluster is None else solution.cluster.to_dict(),
        "output": solution.output,
        "seed": solution.seed,
        "n_assignment": None if solution.assignment is None else len(solution.assignment),
        "guarantee": None if solution.guarantee is None else solution.guarantee.to_dict(),
    }
    if solution.assignment is not None:
        for l, placement in enumerate(solution.assignment):
            arrays[f"assignment{l}"] = _placement_array(l, placement)
    if solution.network is not None:
        header["network"], net_arrays = solution.network.to_payload()
        arrays.update({f"network.{key}": value for key, value in net_arrays.items()})
    return _io.write_npz(path, _FORMAT, _FORMAT_VERSION, header, arrays)


def load_solution(path: str | os.PathLike) -> Solution:
    """Read a solution written by :func:`save_solution`; its report is recomputed by the simulator.

    Raises
    ------
    FormatError
        The file is missing, truncated or corrupted (checksums), of a newer format version, or its
        description is malformed.
    InvalidParameterError
        ``path`` is not a path.
    """
    from .simulator import simulate

    header, arrays = _io.read_npz(path, _FORMAT, _FORMAT_VERSION)
    try:
        _check_header(header)
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
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{str(path)!r} has a malformed solution description: {exc!r}") from exc


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_fields(solution: Solution) -> None:
    """Refuse a hand-built Solution whose fields cannot be written faithfully (before anything is written)."""
    from .guarantee import Guarantee

    def fail(field_name: str, what: str, value: Any) -> None:
        raise InvalidParameterError(f"`solution.{field_name}` must be {what}, got {type(value).__name__}")

    if not isinstance(solution.status, Status):
        fail("status", "a repurpose_opt.Status", solution.status)
    for name in ("objective", "bound", "gap"):
        value = getattr(solution, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            fail(name, "a real number or None", value)
    if not isinstance(solution.backend, str):
        fail("backend", "a str", solution.backend)
    if not isinstance(solution.message, str):
        fail("message", "a str", solution.message)
    if not isinstance(solution.timings, dict):
        fail("timings", "a dict", solution.timings)
    if not isinstance(solution.stats, dict):
        fail("stats", "a dict", solution.stats)
    if solution.output not in ("gather", "distributed"):
        raise InvalidParameterError(f"`solution.output` must be 'gather' or 'distributed', got {solution.output!r:.60}")
    if solution.seed is not None and (isinstance(solution.seed, bool) or not isinstance(solution.seed, (int, np.integer))):
        fail("seed", "an int or None", solution.seed)
    if solution.network is not None and not isinstance(solution.network, Network):
        fail("network", "a repurpose_opt.Network or None", solution.network)
    if solution.cluster is not None and not isinstance(solution.cluster, Cluster):
        fail("cluster", "a repurpose_opt.Cluster or None", solution.cluster)
    if solution.guarantee is not None and not isinstance(solution.guarantee, Guarantee):
        fail("guarantee", "a repurpose_opt Guarantee or None", solution.guarantee)
    if solution.assignment is not None and (isinstance(solution.assignment, (str, bytes, np.ndarray))
                                            or not isinstance(solution.assignment, (tuple, list))):
        fail("assignment", "a tuple of int arrays or None", solution.assignment)


def _placement_array(l: int, placement: Any) -> np.ndarray:
    array = np.asarray(placement)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise InvalidParameterError(
            f"`solution.assignment[{l}]` must be a 1-D integer array, got shape {array.shape} and dtype {array.dtype}"
        )
    return array.astype(np.int64)


def _check_header(header: dict[str, Any]) -> None:
    """Types of every field :func:`load_solution` reads (a well-formed archive may still hold nonsense)."""
    def bad(key: str, what: str) -> None:
        raise FormatError(f"the solution's `{key}` must be {what}, got {header.get(key)!r:.60}")

    for key in ("status", "backend", "message", "output", "timings", "stats", "n_assignment", "objective", "bound", "gap",
                "seed", "cluster"):
        if key not in header:
            raise KeyError(key)
    for key in ("objective", "bound", "gap"):
        if header[key] is not None and not _is_number(header[key]):
            bad(key, "a number or null")
    for key in ("backend", "message"):
        if not isinstance(header[key], str):
            bad(key, "a string")
    if header["output"] not in ("gather", "distributed"):
        bad("output", "'gather' or 'distributed'")
    if not isinstance(header["timings"], dict) or not all(_is_number(v) for v in header["timings"].values()):
        bad("timings", "an object of numbers")
    if not isinstance(header["stats"], dict):
        bad("stats", "an object")
    n = header["n_assignment"]
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        bad("n_assignment", "a positive integer or null")
    if header["seed"] is not None and (not isinstance(header["seed"], int) or isinstance(header["seed"], bool)):
        bad("seed", "an integer or null")


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, dtype=np.int64)
    array.flags.writeable = False
    return array
