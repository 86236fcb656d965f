"""repurpose-opt: restructure a trained neural network to run on K workers with minimal communication.

The public API (SPEC §7) is re-exported here; optional backends (OR-tools, cvxpy, Mt-KaHyPar, torch) are
never imported at package import time.
"""

from .api import solve
from .cluster import Cluster
from .errors import (
    BackendCannotSolveError,
    BackendUnavailableError,
    FormatError,
    InvalidParameterError,
    InvalidProblemError,
    RepurposeError,
    SolverError,
    UnknownBackendError,
)
from .guarantee import Guarantee, certify
from .layers import AvgPool2d, Conv2d, Dense, Flatten, Identity, MaxPool2d, ReLU, Sigmoid, Tanh
from .network import LayerStructure, Network
from .problems import PartitionProblem, PruningProblem, RestructureProblem
from .simulator import SimulationReport, simulate
from .solution import Solution, Status, load_solution, save_solution
from .solvers.registry import list_backends
from .verify import VerificationReport, verify

__version__ = "0.1.0"


def __getattr__(name: str):
    # `ro.runtime` and `ro.export` load the runtime package on first use only: it is light (torch is imported
    # by the worker processes, never here), but keeping it lazy keeps `import repurpose_opt` minimal.
    if name in ("runtime", "export"):
        import importlib

        runtime = importlib.import_module(".runtime", __name__)
        return runtime if name == "runtime" else runtime.export
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AvgPool2d",
    "BackendCannotSolveError",
    "BackendUnavailableError",
    "Cluster",
    "Conv2d",
    "Dense",
    "Flatten",
    "FormatError",
    "Guarantee",
    "Identity",
    "InvalidParameterError",
    "InvalidProblemError",
    "LayerStructure",
    "MaxPool2d",
    "Network",
    "PartitionProblem",
    "PruningProblem",
    "ReLU",
    "RestructureProblem",
    "RepurposeError",
    "Sigmoid",
    "SimulationReport",
    "Solution",
    "SolverError",
    "Status",
    "Tanh",
    "UnknownBackendError",
    "VerificationReport",
    "certify",
    "export",
    "list_backends",
    "load_solution",
    "save_solution",
    "simulate",
    "solve",
    "verify",
    "__version__",
]
