"""Shared test settings.

Hypothesis runs without per-example deadlines: a loaded CI machine must not fail a fuzz
test for being slow, only for finding a bug.  And the package's logger is put back after
every test, since ``slirpnet.logs.configure`` (run by the CLI) points it at a stderr that
pytest closes when the test ends.
"""

import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("slirpnet", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("slirpnet")


@pytest.fixture(autouse=True)
def _restore_logger() -> Iterator[None]:
    logger = logging.getLogger("slirpnet")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
