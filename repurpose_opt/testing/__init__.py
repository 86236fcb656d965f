"""Conformance suite and test instances for backends, built-in or third-party.

>>> from repurpose_opt.testing import check_backend
>>> results = check_backend("random", quick=True)   # raises AssertionError naming what failed
>>> all(r.check for r in results)
True

See :func:`check_backend` for the checks and :mod:`repurpose_opt.testing.instances` for the instances
(hand-made ones with optima worked out by hand, planted block-diagonal ones with optimum 0, and random
ones whose optimum comes from the brute-force oracle). ``repurpose_opt.solvers.template`` shows how to
write a backend that passes.
"""

from .conformance import CheckResult, check_backend, oracle_optimum
from .instances import (
    Instance,
    conformance_instances,
    planted_conv_network,
    planted_dense_network,
    random_conv_network,
    random_dense_network,
    relabel_workers,
)

__all__ = [
    "CheckResult",
    "Instance",
    "check_backend",
    "conformance_instances",
    "oracle_optimum",
    "planted_conv_network",
    "planted_dense_network",
    "random_conv_network",
    "random_dense_network",
    "relabel_workers",
]
