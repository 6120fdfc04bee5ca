"""Hypothesis without per-example deadlines: a loaded CI machine must not fail a fuzz test
for being slow, only for finding a bug."""

from hypothesis import HealthCheck, settings

settings.register_profile("slirpnet", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("slirpnet")
