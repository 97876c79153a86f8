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


def test_definitions_load_without_the_run_time_libraries() -> None:
    """Loading the code location (every Dagster process does, on every reload) stays close to the
    cost of importing Dagster itself: SQLAlchemy, pandas and slack-sdk load when a run, check or
    sensor needs them (docs/performance.md, goal 6)."""
    code = (
        "import sys\n"
        "import heliox_orchestration.definitions\n"
        "heavy = ('sqlalchemy', 'pandas', 'numpy', 'psycopg2', 'slack_sdk')\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_catalog_columns_match_the_schema() -> None:
    """The asset catalog's column lists (a generated module, so that loading the definitions
    does not import SQLAlchemy) are those of db/schema.py."""
    from heliox_orchestration.db.schema import table_columns
    from heliox_orchestration.db.table_columns import TABLE_COLUMNS

    assert table_columns() == TABLE_COLUMNS, "db/table_columns.py is stale: run `make table-columns`"
