"""The tag marking the runs `heliox run` starts; ``op_config`` lives in
``heliox_orchestration.run_config`` so that the alert-kind registry can use it without importing
the automation package."""

from __future__ import annotations

from heliox_orchestration.run_config import op_config

# `heliox run` runs the alert job after its refresh itself: the alert sensors skip its refreshes.
STARTED_BY_TAG = "heliox/started_by"
STARTED_BY_HELIOX_RUN = "heliox run"

__all__ = ["STARTED_BY_HELIOX_RUN", "STARTED_BY_TAG", "op_config"]
