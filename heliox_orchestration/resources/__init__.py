"""Dagster resources: every external system Heliox talks to."""

from __future__ import annotations

import os

from dagster import EnvVar


def env_secret(name: str) -> EnvVar | None:
    """``EnvVar(name)`` when the variable exists, else None.

    Only the variable's presence is checked here, never its value: the value is resolved by
    Dagster in the run worker, so it stays out of run config and the event log. An unset
    variable must not become an EnvVar, which Dagster would reject at launch."""
    return EnvVar(name) if name in os.environ else None
