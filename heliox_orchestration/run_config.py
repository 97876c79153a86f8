"""Run config of one op, the shape every schedule, sensor and `heliox run` request uses."""

from __future__ import annotations


def op_config(op_name: str, **config: object) -> dict:
    return {"ops": {op_name: {"config": config}}}
