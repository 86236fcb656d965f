"""The backend registry, in preference order, with lazy loading.

Built-in backends are named here as ``module:Class`` strings and imported on first use; a built-in whose
module is not part of this install is simply not listed. Third-party backends register through the
``repurpose_opt.backends`` entry-point group (``name = "pkg.module:Class"``), also loaded only when asked
for, or at run time with :func:`register_backend` (how tests and the conformance suite plug in a backend
class without packaging it).
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from typing import Any

from ..errors import BackendCannotSolveError, BackendUnavailableError, UnknownBackendError
from .base import Backend

__all__ = [
    "BUILTIN_BACKENDS",
    "AUTO_ORDER",
    "get_backend",
    "backend_names",
    "list_backends",
    "resolve_backend",
    "register_backend",
    "unregister_backend",
]

#: Built-in backends in preference order.
BUILTIN_BACKENDS: dict[str, str] = {
    "bruteforce": "repurpose_opt.solvers.bruteforce:BruteForceBackend",
    "direct": "repurpose_opt.solvers.direct:DirectBackend",
    "random": "repurpose_opt.solvers.random_placement:RandomBackend",
    "greedy": "repurpose_opt.solvers.greedy:GreedyBackend",
    "munkres": "repurpose_opt.solvers.munkres:MunkresBackend",
    "ortools": "repurpose_opt.solvers.ortools_cpsat:OrtoolsBackend",
    "cvxpy": "repurpose_opt.solvers.cvxpy_milp:CvxpyBackend",
    "hypergraph": "repurpose_opt.solvers.hypergraph:HypergraphBackend",
    "repurpose": "repurpose_opt.solvers.repurpose:RepurposeBackend",
}

#: What ``backend="auto"`` tries, per problem type, first usable wins (fast and good first).
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "PartitionProblem": ("greedy", "munkres", "hypergraph", "bruteforce", "direct"),
    "RestructureProblem": ("repurpose", "direct"),
    "PruningProblem": ("greedy", "cvxpy", "bruteforce"),
}

_PLUGIN_GROUP = "repurpose_opt.backends"
_cache: dict[str, type[Backend]] = {}
_registered: dict[str, type[Backend]] = {}


def _plugins() -> dict[str, Any]:
    return {
        ep.name: ep
        for ep in entry_points(group=_PLUGIN_GROUP)
        if ep.name not in BUILTIN_BACKENDS and ep.name not in _registered
    }


def _shipped(name: str) -> bool:
    # A built-in is listed only when its module is part of this install (found, not imported).
    try:
        return importlib.util.find_spec(BUILTIN_BACKENDS[name].split(":")[0]) is not None
    except (ImportError, ValueError):
        return False


def backend_names() -> list[str]:
    """Every known backend name: built-ins in preference order, then registered ones, then plug-ins."""
    builtin = [name for name in BUILTIN_BACKENDS if _shipped(name)]
    return builtin + [name for name in _registered if name not in builtin] + sorted(_plugins())


def installed_partition_backends() -> list[str]:
    """Names of the installed backends that solve a PartitionProblem, in preference order."""
    return [row["name"] for row in list_backends(available_only=True) if "PartitionProblem" in row["problems"]]


def register_backend(cls: type[Backend], *, replace: bool = False) -> type[Backend]:
    """Make the backend class ``cls`` known under ``cls.name`` for this process.

    Parameters
    ----------
    cls : subclass of :class:`~repurpose_opt.solvers.base.Backend`
    replace : bool
        Allow replacing a backend registered earlier under the same name (built-ins are never replaced).

    Returns
    -------
    cls, so the function also works as a class decorator.

    Examples
    --------
    >>> from repurpose_opt.solvers.registry import register_backend, unregister_backend, backend_names
    >>> from repurpose_opt.solvers.template import TemplateBackend
    >>> _ = register_backend(TemplateBackend)
    >>> "template" in backend_names()
    True
    >>> unregister_backend("template")
    """
    from ..errors import InvalidParameterError

    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise InvalidParameterError(f"`cls` must be a subclass of repurpose_opt.solvers.Backend, got {cls!r}")
    name = cls.name
    if not isinstance(name, str) or not name or name == "auto":
        raise InvalidParameterError(f"`cls.name` must be a non-empty string other than 'auto', got {name!r}")
    if name in BUILTIN_BACKENDS:
        raise InvalidParameterError(f"`cls.name` {name!r} is a built-in backend; choose another name")
    if name in _registered and _registered[name] is not cls and not replace:
        raise InvalidParameterError(f"`cls.name` {name!r} is already registered; pass replace=True to replace it")
    _registered[name] = cls
    _cache[name] = cls
    return cls


def unregister_backend(name: str) -> None:
    """Forget a backend added with :func:`register_backend` (unknown names are ignored)."""
    if _registered.pop(name, None) is not None:
        _cache.pop(name, None)


def get_backend(name: str) -> type[Backend]:
    """The backend class called ``name`` (imports our module, never the native library)."""
    if name in _cache:
        return _cache[name]
    if name in BUILTIN_BACKENDS and _shipped(name):
        module_name, class_name = BUILTIN_BACKENDS[name].split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
    else:
        plugin = _plugins().get(name)
        if plugin is None:
            installed = [n for n in backend_names() if get_backend(n).available()]
            raise UnknownBackendError(
                f"`backend` {name!r} is unknown; known backends: {', '.join(backend_names())}; "
                f"installed: {', '.join(installed) or 'none'}"
            )
        cls = plugin.load()
    _cache[name] = cls
    return cls


def resolve_backend(name: Any, problem: Any) -> Backend:
    """An instance of the backend that will solve ``problem``, or the precise error why none can."""
    if not isinstance(name, str):
        raise UnknownBackendError(f"`backend` must be a backend name (str), got {type(name).__name__}")
    kind = type(problem).__name__
    if name == "auto":
        reasons = []
        for candidate in AUTO_ORDER.get(kind, ()):
            if candidate not in backend_names():
                continue
            cls = get_backend(candidate)
            if not cls.available():
                reasons.append(f"{candidate}: not installed")
                continue
            backend = cls()
            reason = backend.can_solve(problem)
            if reason is None:
                return backend
            reasons.append(f"{candidate}: {reason}")
        raise BackendCannotSolveError(f"no installed backend can solve this {kind} ({'; '.join(reasons) or 'none known'})")
    cls = get_backend(name)
    missing = cls.missing_modules()
    if missing:
        extra = f"pip install 'repurpose-opt[{cls.extra}]'" if cls.extra else "install " + ", ".join(missing)
        raise BackendUnavailableError(f"backend {name!r} needs {', '.join(missing)}, which is not installed: {extra}")
    backend = cls()
    reason = backend.can_solve(problem)
    if reason is not None:
        raise BackendCannotSolveError(f"backend {name!r} cannot solve this {kind}: {reason}")
    return backend


def list_backends(available_only: bool = False) -> list[dict[str, Any]]:
    """One row per backend: name, installed or not, the extra that brings it, problems, exactness.

    ``exact`` is True when the backend proves optimality on at least one problem type; ``exact_for`` lists
    those problem types.
    """
    from .._validation import as_bool

    available_only = as_bool("available_only", available_only)
    rows = []
    for name in backend_names():
        cls = get_backend(name)
        ready = cls.available()
        if available_only and not ready:
            continue
        rows.append(
            {
                "name": name,
                "available": ready,
                "missing": cls.missing_modules(),
                "extra": cls.extra,
                "problems": list(cls.problem_types),
                "exact": any(cls.is_exact(kind) for kind in cls.problem_types),
                "exact_for": [kind for kind in cls.problem_types if cls.is_exact(kind)],
                "description": cls.description,
            }
        )
    return rows
