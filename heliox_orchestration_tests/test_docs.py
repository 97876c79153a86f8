from __future__ import annotations

from pathlib import Path

from heliox_orchestration.settings import ENVIRONMENT_VARIABLES

ROOT = Path(__file__).resolve().parents[1]


def test_readme_documents_every_environment_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name, _, _ in ENVIRONMENT_VARIABLES if f"`{name}`" not in readme]
    assert not missing, f"README lacks: {missing}"


def test_readme_quick_start_commands_exist_in_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\nrun:" in makefile and "\ntest:" in makefile
    assert "make run" in (ROOT / "README.md").read_text()
