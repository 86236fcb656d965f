"""Problem definitions (SPEC §3): frozen, validated on construction, holding no solver objects."""

from .partition import PartitionProblem

__all__ = ["PartitionProblem"]
