"""Shared test set-up: make ``tests/helpers`` importable as ``helpers``; a CI-sized
hypothesis profile."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")

from helpers.backends import database, location_factory  # noqa: E402, F401  (fixtures)
from helpers.pgserver import pg_server, pg_url  # noqa: E402, F401  (fixtures)
from helpers.redisserver import redis_server, redis_url  # noqa: E402, F401  (fixtures)
