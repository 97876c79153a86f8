"""The Heliox code location: small per-module Definitions assembled into one ``defs``."""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions

from heliox_orchestration.assets import build_asset_defs
from heliox_orchestration.automation import build_automation_defs
from heliox_orchestration.environment import load_environment
from heliox_orchestration.resources.definitions import build_resource_defs
from heliox_orchestration.settings import Settings

# Dagster 1.13 itself passes `owners` when it binds resources to a sensor's jobs, warning on every
# load about a beta parameter Heliox never sets. Only that exact message is ignored.
warnings.filterwarnings(
    "ignore", message=r"Parameter `owners` of initializer `SensorDefinition.__init__`", category=BetaWarning
)


def build_defs(settings: Settings) -> Definitions:
    return Definitions.merge(
        build_resource_defs(settings),
        build_asset_defs(settings),
        build_automation_defs(settings),
    )


defs = build_defs(load_environment())
