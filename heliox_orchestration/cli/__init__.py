"""The ``heliox`` command line: one click group, its commands in the modules of this package."""

from __future__ import annotations

from heliox_orchestration.cli import alerts, data, mutes, setup, storage
from heliox_orchestration.cli.common import cli

COMMAND_MODULES = (data, setup, alerts, mutes, storage)  # importing them registers their commands

__all__ = ["cli", "main"]


def main() -> None:
    cli()
