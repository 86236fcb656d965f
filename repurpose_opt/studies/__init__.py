"""Studies: reproducible experiments over the shipped models (backend comparisons, trade-off curves).

- :func:`compare`: every (problem, backend, seed) on one meter (volume, bound, gap, status, time, verify),
  written as CSV/JSON with plots; instances from :mod:`repurpose_opt.studies.instances`;
- :func:`tradeoff`: communication vs accuracy of restructured models over a sweep of tolerances;
- :class:`ProgressBar`: the stderr progress bar every study draws.

The functions ``compare`` and ``tradeoff`` are re-exported here under the names of the modules that hold
them, so ``repurpose_opt.studies.compare`` is the function; import the module's other names with
``from repurpose_opt.studies.compare import ...``.
"""

from .compare import compare, format_summary, summarize
from .instances import Instance, parse_instance, planted_network, prune_network, pruned_model, random_network
from .progress import ProgressBar
from .tradeoff import plot_tradeoff, tradeoff

__all__ = [
    "Instance",
    "ProgressBar",
    "compare",
    "format_summary",
    "parse_instance",
    "planted_network",
    "plot_tradeoff",
    "prune_network",
    "pruned_model",
    "random_network",
    "summarize",
    "tradeoff",
]
