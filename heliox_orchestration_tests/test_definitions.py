from __future__ import annotations

import subprocess
import sys

from dagster import Definitions


def test_definitions_load_with_no_environment() -> None:
    """A fresh process with no Heliox variables at all loads and validates the code location."""
    code = (
        "from dagster import Definitions\n"
        "from heliox_orchestration.definitions import defs\n"
        "assert isinstance(defs, Definitions)\n"
        "Definitions.validate_loadable(defs)\n"
        "print('ok')\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_definitions_validate_in_process() -> None:
    from heliox_orchestration.definitions import defs

    Definitions.validate_loadable(defs)
    assert "heliox_db" in defs.resources
