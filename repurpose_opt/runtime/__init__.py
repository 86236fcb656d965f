"""Running a placed network on real workers: per-worker export, the torch.distributed runtime, calibration.

- :func:`export` / :func:`load_export`: one shard per worker plus a manifest with the exact message lists;
- :func:`run_distributed`: K worker processes on ``torch.distributed`` moving exactly those messages;
- :func:`calibrate_network` / :func:`compare_latency`: measure α, β and FLOP rates into a ``Cluster`` and
  check the α-β model against measured per-layer times.

Nothing here imports torch at import time: the worker processes import it, never the parent.
"""

from .calibrate import LatencyComparison, NetworkCalibration, calibrate_network, compare_latency, predicted_times
from .distributed import RunResult, RuntimeFailure, run_distributed
from .export import ExportedModel, LayerPlan, export, load_export

__all__ = [
    "ExportedModel",
    "LatencyComparison",
    "LayerPlan",
    "NetworkCalibration",
    "RunResult",
    "RuntimeFailure",
    "calibrate_network",
    "compare_latency",
    "export",
    "load_export",
    "predicted_times",
    "run_distributed",
]
