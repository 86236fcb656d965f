"""Problem definitions (SPEC §3): frozen, validated on construction, holding no solver objects."""

from .partition import PartitionProblem
from .pruning import PruningProblem
from .restructure import RestructureProblem

__all__ = ["PartitionProblem", "PruningProblem", "RestructureProblem"]
