"""What every backend is: a small class that declares its capabilities and solves.

A backend declares its ``name``, the modules it needs (looked up with ``importlib.util.find_spec``, never
imported to answer "is it installed?"), the pip extra that brings them, the problem types it accepts,
whether it can prove optimality (``exact``: ``True`` for every problem type it accepts, or the tuple of the
problem types on which it is exact), and its options with defaults. Native imports live inside ``solve``.

``solve`` returns a :class:`BackendResult`; :func:`repurpose_opt.solve` turns it into a
:class:`~repurpose_opt.Solution`, recounting the objective with the simulator and refusing inconsistent
claims (an OPTIMAL status without a matching bound, a bound above the objective, a wrong objective).

Incumbents and interruption
---------------------------
While it searches, a backend *offers* every better complete answer it holds:
``self.offer(assignment, objective=..., network=...)`` (or, from a module-level helper that has no backend
at hand, :func:`offer_incumbent` with the same arguments). Offering is cheap (the arrays are copied, nothing
is recounted) and a no-op outside :func:`repurpose_opt.solve`. When the user presses Ctrl-C,
``KeyboardInterrupt`` unwinds the backend; :func:`repurpose_opt.solve` catches it and builds the
:class:`~repurpose_opt.Solution` from the last incumbent offered (recounted by the simulator like any other
answer), with status FEASIBLE (NO_SOLUTION when nothing was offered), a message saying it was interrupted
and ``stats["interrupted"] = True``. A backend driving a native solver stops it (and kills any child
process) in a ``finally``/``except KeyboardInterrupt`` block, offers what the solver had found, and
re-raises. Nested solves (a backend calling :func:`repurpose_opt.solve` for a warm start or a placement)
re-raise the interrupt so that the outermost solve answers; offers made on the *same problem object* by a
nested solve also count for the enclosing one (a warm start's answer is an incumbent of the exact solver).

Rules for offers: only complete, feasible answers (every layer placed, balance and capacities met; a
restructured network meeting its tolerances); offer only improvements. The slot keeps the most recent
offer, except that when both the held and the new offer carry an ``objective``, the smaller one wins.
``guarantee`` may be a zero-argument callable, evaluated only if the incumbent is returned.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..solution import Status

__all__ = ["Backend", "BackendResult", "Option", "integer", "number", "boolean", "choice", "text", "mapping", "Incumbent", "IncumbentSlot", "offer_incumbent", "incumbent_slot",
           "memory_budget", "format_bytes", "MEMORY_ENV", "restructure_bytes"]

#: Environment variable that sets the memory a backend's model may take (bytes, or e.g. "6GiB", "500MB").
MEMORY_ENV = "REPURPOSE_OPT_MEMORY_LIMIT"
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20, "g": 1e9, "gb": 1e9,
          "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def memory_budget() -> int:
    """Bytes a backend's model may take before ``can_solve`` refuses the instance up front.

    ``$REPURPOSE_OPT_MEMORY_LIMIT`` when set (``"6GiB"``, ``"500MB"``, ``"2e9"``), else half the machine's
    physical memory (4 GiB when that cannot be read). Backends compare their size *estimates* with it, so an
    instance that would exhaust the memory is refused with the estimate instead of being attempted.

    Examples
    --------
    >>> import os
    >>> os.environ["REPURPOSE_OPT_MEMORY_LIMIT"] = "1.5GiB"
    >>> memory_budget()
    1610612736
    >>> del os.environ["REPURPOSE_OPT_MEMORY_LIMIT"]
    """
    import os
    import re

    text = os.environ.get(MEMORY_ENV, "").strip()
    if text:
        match = re.fullmatch(r"([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)", text)
        unit = _UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None:
            from ..errors import InvalidParameterError

            raise InvalidParameterError(f"`${MEMORY_ENV}` must be a number of bytes such as '6GiB' or '500MB', got {text!r}")
        return int(float(match.group(1)) * unit)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4 * 2**30


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``: sizes in refusal messages.

    Examples
    --------
    >>> format_bytes(1536), format_bytes(9.3 * 2**30)
    ('1.5 KiB', '9.3 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def describe_exit(code: int | None) -> str:
    """How a child process ended, for an error message: "was killed by SIGKILL", "exited with code 1".

    Examples
    --------
    >>> describe_exit(-9), describe_exit(1)
    ('was killed by SIGKILL', 'exited with code 1')
    """
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass(frozen=True)
class Option:
    """One backend option: its default, what it does, and (optionally) how a user's value is checked.

    ``check(name, value)`` returns the value to use or raises :class:`~repurpose_opt.InvalidParameterError`
    naming the option; :func:`repurpose_opt.solve` applies it to the values the user passes (the defaults
    are trusted). Build checks with :func:`integer`, :func:`number`, :func:`boolean`, :func:`choice`,
    :func:`text` and :func:`mapping`.
    """

    default: Any
    doc: str
    check: Any = field(default=None, repr=False, compare=False)


def _option_error(exc: Exception) -> Exception:
    from ..errors import InvalidParameterError

    return InvalidParameterError(f"option {exc}")


def _scalar_check(convert: Any, *, auto: bool = False, none: bool = False):
    """A check that converts with ``convert(name, value)``, passing ``"auto"`` / ``None`` through when asked."""
    from ..errors import InvalidParameterError

    def check(name: str, value: Any) -> Any:
        if (auto and isinstance(value, str) and value == "auto") or (none and value is None):
            return value
        try:
            return convert(name, value)
        except InvalidParameterError as exc:
            also = " (or 'auto')" if auto else (" (or None)" if none else "")
            raise _option_error(InvalidParameterError(f"{exc}{also}")) from None

    return check


def integer(minimum: int | None = None, maximum: int | None = None, *, auto: bool = False, none: bool = False):
    """Check: an integer in range (``"auto"`` or ``None`` also accepted when asked).

    Examples
    --------
    >>> integer(minimum=1)("max_sweeps", 3)
    3
    >>> integer(minimum=1)("max_sweeps", "many")
    Traceback (most recent call last):
    ...
    repurpose_opt.errors.InvalidParameterError: option `max_sweeps` must be an integer, got 'many'
    """
    from .._validation import as_int

    return _scalar_check(lambda name, value: as_int(name, value, minimum=minimum, maximum=maximum), auto=auto, none=none)


def number(minimum: float | None = None, maximum: float | None = None, *, strictly_positive: bool = False,
           auto: bool = False, none: bool = False):
    """Check: a finite real number in range (``"auto"`` or ``None`` also accepted when asked)."""
    from .._validation import as_float

    return _scalar_check(lambda name, value: as_float(name, value, minimum=minimum, maximum=maximum,
                                                      strictly_positive=strictly_positive), auto=auto, none=none)


def boolean(*, auto: bool = False):
    """Check: True or False (``"auto"`` also accepted when asked)."""
    from .._validation import as_bool

    return _scalar_check(as_bool, auto=auto)


def choice(*values: str):
    """Check: one of the given strings."""
    from .._validation import as_choice
    from ..errors import InvalidParameterError

    def check(name: str, value: Any) -> Any:
        try:
            return as_choice(name, value, tuple(values))
        except InvalidParameterError as exc:
            raise _option_error(exc) from None

    return check


def text():
    """Check: a string (e.g. a backend name, checked where it is used)."""
    from .._validation import _describe

    def check(name: str, value: Any) -> Any:
        if not isinstance(value, str):
            from ..errors import InvalidParameterError

            raise InvalidParameterError(f"option `{name}` must be a string, got {_describe(value)}")
        return value

    return check


def mapping():
    """Check: a dict with string keys (passed through to a native solver)."""
    from .._validation import _describe

    def check(name: str, value: Any) -> Any:
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            from ..errors import InvalidParameterError

            raise InvalidParameterError(f"option `{name}` must be a dict with string keys, got {_describe(value)}")
        return value

    return check


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


@dataclass(frozen=True)
class Incumbent:
    """A complete answer a backend offered during its search (module docstring)."""

    assignment: tuple[np.ndarray, ...]
    network: Any = None
    objective: float | None = None
    bound: float | None = None
    guarantee: Any = None
    message: str = ""
    offered_at: float = 0.0


class IncumbentSlot:
    """The incumbents of one :func:`repurpose_opt.solve` call (held in a context variable)."""

    def __init__(self, problem: Any, parent: IncumbentSlot | None = None) -> None:
        self.problem = problem
        self.parent = parent
        self.best: Incumbent | None = None
        self.offers = 0
        self.started = time.perf_counter()

    def offer(self, incumbent: Incumbent) -> None:
        held = self.best
        if held is None or held.objective is None or incumbent.objective is None or incumbent.objective <= held.objective:
            self.best = incumbent
        self.offers += 1
        if self.parent is not None and self.parent.problem is self.problem:
            self.parent.offer(incumbent)

    def result(self, reason: str) -> BackendResult:
        """The :class:`BackendResult` of an interrupted solve: the best incumbent (FEASIBLE) or NO_SOLUTION."""
        elapsed = time.perf_counter() - self.started
        stats: dict[str, Any] = {"interrupted": True, "incumbents_offered": self.offers, "interrupted_after": elapsed}
        best = self.best
        if best is None:
            return BackendResult(Status.NO_SOLUTION, message=f"{reason} after {elapsed:.2f} s, before the backend had a solution",
                                 stats=stats)
        guarantee = best.guarantee
        if callable(guarantee):
            try:
                guarantee = guarantee()
            except Exception as exc:  # noqa: BLE001 - the incumbent stays useful without its guarantee
                guarantee = None
                stats["guarantee_error"] = f"{type(exc).__name__}: {exc}"
        stats["incumbent_age"] = elapsed - (best.offered_at - self.started)
        detail = f": {best.message}" if best.message else ""
        return BackendResult(Status.FEASIBLE, best.assignment, bound=best.bound, objective=best.objective, network=best.network,
                             guarantee=guarantee, message=f"{reason} after {elapsed:.2f} s; best incumbent so far{detail}",
                             stats=stats)


_SLOT: contextvars.ContextVar[IncumbentSlot | None] = contextvars.ContextVar("repurpose_opt_incumbent_slot", default=None)


@contextlib.contextmanager
def incumbent_slot(problem: Any) -> Iterator[IncumbentSlot]:
    """Collect the incumbents offered while the block runs (used by :func:`repurpose_opt.solve`)."""
    slot = IncumbentSlot(problem, _SLOT.get())
    token = _SLOT.set(slot)
    try:
        yield slot
    finally:
        _SLOT.reset(token)


def offer_incumbent(assignment: Any, *, network: Any = None, objective: float | None = None, bound: float | None = None,
                    guarantee: Any = None, message: str = "") -> None:
    """Record a complete answer found so far by the solve in progress (a no-op outside a solve).

    ``assignment`` is copied, so the caller may keep changing its arrays. See the module docstring for the
    rules (complete and feasible answers only, improvements only).

    Examples
    --------
    >>> import numpy as np
    >>> from repurpose_opt.solvers.base import incumbent_slot, offer_incumbent
    >>> with incumbent_slot(problem=None) as slot:
    ...     offer_incumbent((np.array([0, 1]),), objective=3.0)
    ...     offer_incumbent((np.array([1, 0]),), objective=5.0)   # worse: the slot keeps the first
    >>> slot.best.objective, slot.offers
    (3.0, 2)
    """
    slot = _SLOT.get()
    if slot is None:
        return
    copied = tuple(np.array(placement, dtype=np.int64, copy=True) for placement in assignment)
    slot.offer(Incumbent(copied, network=network, objective=None if objective is None else float(objective),
                         bound=None if bound is None else float(bound), guarantee=guarantee, message=message,
                         offered_at=time.perf_counter()))


def restructure_bytes(problem: Any) -> tuple[float, str]:
    """Estimated peak memory (bytes) of the cascade on a RestructureProblem, and the layer that sets it.

    Per linear layer with F input features (+1 for the bias), n_out units, K workers and M design rows
    (calibration samples, times output positions for a conv layer), in float64: the design matrix and the
    targets (M·(F+1) + M·n_out), the shared Gram matrices G and ΦᵀΦ and the correlations
    (2·(F+1)² + 2·n_out·(F+1)), and one :class:`~repurpose_opt.lsq.WorkerFit` per worker, whose ``B = L⁻¹G[S, :]``
    reaches (F+1)² once the worker reads every input (K·(F+1)²). Plus the traces of the original and the
    restructured network on the calibration set (2·N·Σ activations).

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> net = ro.Network([ro.Dense(np.ones((4, 3)))], input_shape=(3,))
    >>> problem = ro.RestructureProblem(net, ro.Cluster(k=2), calibration=np.ones((10, 3)), tolerance=0.1)
    >>> need, where = restructure_bytes(problem)
    >>> int(need), where
    (2528, 'layer 1 (3 input features, 4 units)')
    """
    network, k = problem.network, problem.cluster.k
    samples = int(np.asarray(problem.calibration).shape[0])
    worst, where = 0.0, ""
    for l, (layer, structure) in enumerate(zip(network.linear_layers, network.structure, strict=True), start=1):
        n_out = int(layer.W.shape[0])
        features = int(np.prod(layer.W.shape[1:])) + 1
        rows = samples * int(structure.output_positions)
        need = 8.0 * (rows * features + rows * n_out + (2 + k) * features**2 + 2 * n_out * features)
        if need > worst:
            worst, where = need, f"layer {l} ({features - 1} input features, {n_out} units)"
    activations = sum(int(np.prod(network.shapes(l)[2])) for l in range(1, network.n_layers + 1))
    activations += int(np.prod(network.input_shape))
    return worst + 16.0 * samples * activations, where


class Backend:
    """Base class of the backends; see ``template.py`` beside this file for how to add one."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    problem_types: ClassVar[tuple[str, ...]] = ()
    exact: ClassVar[bool | tuple[str, ...]] = False
    options: ClassVar[dict[str, Option]] = {}

    @classmethod
    def is_exact(cls, problem_type: str) -> bool:
        """Whether the backend proves optimality on problems of type ``problem_type`` (a class name)."""
        if problem_type not in cls.problem_types:
            return False
        return cls.exact if isinstance(cls.exact, bool) else problem_type in cls.exact

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
        """``None`` when this backend accepts ``problem``, else the reason it does not.

        The base class checks the problem type and, for a RestructureProblem, that the cascade's least
        squares fit the memory budget (:func:`restructure_bytes`, :func:`memory_budget`).
        """
        kind = type(problem).__name__
        if kind not in self.problem_types:
            accepted = ", ".join(self.problem_types)
            return f"it solves {accepted} only, not {kind}"
        if kind == "RestructureProblem":
            need, where = restructure_bytes(problem)
            limit = memory_budget()
            if need > limit:
                return (f"the least-squares refit of {where} would need ~{format_bytes(need)} (Gram matrices, one "
                        f"Cholesky update per worker, the design matrix); limit {format_bytes(limit)} (${MEMORY_ENV}); "
                        f"use fewer calibration samples or workers")
        return None

    def offer(self, assignment: Any, *, network: Any = None, objective: float | None = None, bound: float | None = None,
              guarantee: Any = None, message: str = "") -> None:
        """Record the best complete answer found so far; returned if the solve is interrupted (module docstring)."""
        offer_incumbent(assignment, network=network, objective=objective, bound=bound, guarantee=guarantee, message=message)

    def solve(self, problem: Any, *, time_limit: float | None, seed: int | None, options: dict[str, Any]) -> BackendResult:
        raise NotImplementedError
