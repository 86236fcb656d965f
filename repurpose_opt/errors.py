"""The package's error hierarchy.

Every error the package raises on purpose derives from :class:`RepurposeError`, and also from the
built-in exception a Python user would expect (``ValueError`` for bad input, ``ImportError`` for a
missing optional dependency, ``RuntimeError`` for a solver crash), so ``except ValueError`` keeps working.

Infeasibility, time limits and missing incumbents are *statuses* of a :class:`~repurpose_opt.Solution`,
never exceptions: exceptions are for misuse and crashes.
"""

from __future__ import annotations

__all__ = [
    "RepurposeError",
    "InvalidProblemError",
    "InvalidParameterError",
    "UnknownBackendError",
    "BackendUnavailableError",
    "BackendCannotSolveError",
    "SolverError",
    "FormatError",
]


class RepurposeError(Exception):
    """Base class of every error raised on purpose by repurpose-opt."""


class InvalidProblemError(RepurposeError, ValueError):
    """A network, cluster or problem is malformed (shapes, NaN/inf, K larger than a layer, ...)."""


class InvalidParameterError(RepurposeError, ValueError):
    """An argument of a function is out of its domain (time limit, seed, option key, placement, ...)."""


class UnknownBackendError(RepurposeError, ValueError):
    """No backend of that name exists; the message lists the known and the installed ones."""


class BackendUnavailableError(RepurposeError, ImportError):
    """The backend exists but its optional dependency is not installed; the message names the extra."""


class BackendCannotSolveError(RepurposeError, ValueError):
    """The backend is installed but cannot solve this problem; the message says why."""


class SolverError(RepurposeError, RuntimeError):
    """A backend crashed or returned an inconsistent answer; the message carries the native error."""


class FormatError(RepurposeError, ValueError):
    """A saved file is corrupted, truncated, or of an unknown format version."""
