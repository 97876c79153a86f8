"""Run config of one op, the shape every schedule, sensor and `heliox run` request uses; and the
tag marking the runs `heliox run` starts."""

from __future__ import annotations

# `heliox run` runs the alert job after its refresh itself: the alert sensors skip its refreshes.
STARTED_BY_TAG = "heliox/started_by"
STARTED_BY_HELIOX_RUN = "heliox run"


def op_config(op_name: str, **config: object) -> dict:
    return {"ops": {op_name: {"config": config}}}
