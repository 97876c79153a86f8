"""Where a Heliox project lives, whatever the working directory: the embedded SQLite database
and the Dagster home of every ``heliox`` command and ``make run`` are found from it.

The project is ``HELIOX_HOME`` when set, else the checkout this package is installed from (an
editable install: the folder holding ``workspace.yaml`` and ``pyproject.toml``). An installed
package outside a checkout (the Docker image) has no project folder: it names its database and
Dagster home itself (``HELIOX_DATABASE_URL`` or an absolute ``HELIOX_DATA_DIR``, ``DAGSTER_HOME``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

HOME_VAR = "HELIOX_HOME"
DAGSTER_HOME_VAR = "DAGSTER_HOME"
DAGSTER_HOME_DIR = ".dagster"  # under the project, as `make run` uses it
# The embedded instance's dagster.yaml in the project, copied into a new Dagster home.
EMBEDDED_INSTANCE_FILE = Path("deploy") / "embedded" / "dagster.yaml"
# The folder this package is installed from, when that is a checkout of the project.
PACKAGE_CHECKOUT = Path(__file__).resolve().parent.parent
MARKERS = ("workspace.yaml", "pyproject.toml")


class HomeError(ValueError):
    """No project folder where one is needed; the message says what to set."""


def installed_checkout(folder: Path = PACKAGE_CHECKOUT) -> Path | None:
    """``folder`` when it is a Heliox checkout (the package is installed from it), else None."""
    return folder if all((folder / marker).is_file() for marker in MARKERS) else None


def project_home(env: Mapping[str, str], checkout: Path | None = PACKAGE_CHECKOUT) -> Path | None:
    """The project folder: ``HELIOX_HOME`` (absolute, must exist) or the installed checkout."""
    raw = env.get(HOME_VAR, "").strip()
    if raw:
        path = Path(raw).expanduser()
        try:
            is_folder = path.is_dir()
        except OSError as exc:  # a folder this user may not enter
            raise HomeError(
                f"{HOME_VAR}={raw} cannot be read ({exc.strerror}); fix its permissions."
            ) from None
        if not is_folder:
            raise HomeError(f"{HOME_VAR}={raw} is not a folder; set it to the Heliox checkout (or unset it).")
        return path.resolve()
    return installed_checkout(checkout) if checkout is not None else None


def embedded_database_path(data_dir: Path, home: Path | None) -> Path:
    """``heliox.db`` in ``data_dir``; a relative ``data_dir`` is under the project folder."""
    if data_dir.is_absolute():
        return data_dir / "heliox.db"
    if home is None:
        raise HomeError(
            f"No Heliox project folder for the embedded database ({data_dir}/heliox.db): set "
            f"{HOME_VAR} to the checkout, or HELIOX_DATABASE_URL, or an absolute HELIOX_DATA_DIR."
        )
    return home / data_dir / "heliox.db"


def dagster_home(env: Mapping[str, str], home: Path | None) -> Path:
    """``DAGSTER_HOME`` when set, else ``.dagster`` under the project folder (``make run``'s)."""
    raw = env.get(DAGSTER_HOME_VAR, "").strip()
    if raw:
        return Path(raw).expanduser().resolve()
    if home is None:
        raise HomeError(
            f"No Dagster home: set {DAGSTER_HOME_VAR} (the folder of dagster.yaml the UI uses), "
            f"or {HOME_VAR} to the Heliox checkout."
        )
    return home / DAGSTER_HOME_DIR
