"""Shared test settings: Hypothesis profiles.

The default profile is derandomized, so the suite gives the same verdict on every run (CI must not
flake); `HYPOTHESIS_PROFILE=explore` draws fresh random examples, many more of them.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=60, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
