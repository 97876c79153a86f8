"""Heliox's run-time settings as a Dagster resource, so that ops, sensors and checks are plain
module-level definitions that receive them (only the partitions and the schedules' crons need
settings when the definitions load)."""

from __future__ import annotations

from functools import lru_cache

from dagster import ConfigurableResource
from pydantic import Field

from heliox_orchestration.settings import Settings, load_settings


class HelioxSettings(ConfigurableResource):
    """The non-secret settings the code location loaded, as the variables that give them
    (``TIMEZONE``, ``BURN_RATE_THRESHOLD_USD``, ...); validated once per process."""

    variables: dict[str, str] = Field(
        default_factory=dict,
        description="Setting variables and their values; unset ones take their defaults. No secrets.",
    )

    @classmethod
    def of(cls, settings: Settings) -> HelioxSettings:
        return cls(variables=settings.to_variables())

    def get(self) -> Settings:
        return _load(tuple(sorted(self.variables.items())))


@lru_cache(maxsize=16)
def _load(items: tuple[tuple[str, str], ...]) -> Settings:
    return load_settings(dict(items))
