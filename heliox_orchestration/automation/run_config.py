"""Kept for the schedules and ``heliox run``: the helper lives in ``heliox_orchestration.run_config``
so that the alert-kind registry can use it without importing the automation package."""

from __future__ import annotations

from heliox_orchestration.run_config import op_config

__all__ = ["op_config"]
