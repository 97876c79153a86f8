"""The ``heliox`` command line: one click group, its commands in the modules of this package,
each imported when its command runs (``common.COMMANDS``)."""

from __future__ import annotations

from heliox_orchestration.cli.common import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli()
