"""What every backend is: a small class that declares its capabilities and solves.

A backend declares its ``name``, the modules it needs (looked up with ``importlib.util.find_spec``, never
imported to answer "is it installed?"), the pip extra that brings them, the problem types it accepts,
whether it can prove optimality, and its options with defaults. Native imports live inside ``solve``.

``solve`` returns a :class:`BackendResult`; :func:`repurpose_opt.solve` turns it into a
:class:`~repurpose_opt.Solution`, recounting the objective with the simulator and refusing inconsistent
claims (an OPTIMAL status without a matching bound, a bound above the objective, a wrong objective).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..solution import Status

__all__ = ["Backend", "BackendResult", "Option"]


@dataclass(frozen=True)
class Option:
    """One backend option: its default and what it does."""

    default: Any
    doc: str


@dataclass
class BackendResult:
    """Raw result of a backend, before the package recounts and checks it.

    ``objective`` is the backend's own claim (checked against the simulator when given); ``bound`` a
    proven lower bound; ``network`` the adjusted network for restructuring backends (``None``: unchanged).
    """

    status: Status
    assignment: tuple[np.ndarray, ...] | None = None
    bound: float | None = None
    objective: float | None = None
    network: Any = None
    guarantee: Any = None
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


class Backend:
    """Base class of the backends; see ``template.py`` beside this file for how to add one."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    problem_types: ClassVar[tuple[str, ...]] = ()
    exact: ClassVar[bool] = False
    options: ClassVar[dict[str, Option]] = {}

    @classmethod
    def missing_modules(cls) -> list[str]:
        """Required modules that are not installed (found without importing them)."""
        missing = []
        for module in cls.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.append(module)
        return missing

    @classmethod
    def available(cls) -> bool:
        return not cls.missing_modules()

    def can_solve(self, problem: Any) -> str | None:
        """``None`` when this backend accepts ``problem``, else the reason it does not."""
        kind = type(problem).__name__
        if kind not in self.problem_types:
            accepted = ", ".join(self.problem_types)
            return f"it solves {accepted} only, not {kind}"
        return None

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        raise NotImplementedError
