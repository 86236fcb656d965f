"""Shared test configuration: a deterministic hypothesis profile and small network builders."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
os.environ.setdefault("MPLBACKEND", "Agg")
# Every solve in the tests is verified (`solve(..., verify=None)` reads this): an inconsistent backend result
# fails the test that produced it instead of passing silently.
os.environ.setdefault("REPURPOSE_OPT_VERIFY", "1")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
