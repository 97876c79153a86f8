# Everyday targets. `make run` and `make test` are the README's two quick-start commands.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 3000
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster

.PHONY: install run test test-fast lint format typecheck check constraints clean

install: $(VENV)/.installed

# `make run` needs the runtime packages only; `make test` (and the other targets) add the dev
# tools. Both pin every version from constraints.txt. -qq: errors only; a machine-wide pip.conf
# naming extra indexes that lack a package would otherwise print a warning per package.
# COMPILE: the bytecode of every installed module, on all cores. Where PYTHONDONTWRITEBYTECODE
# is set (the development and CI machines set it) pip compiles nothing and Python never caches
# what it compiles, so every process (each Dagster run, each CLI command) would compile pandas,
# SQLAlchemy and Dagster from source again: 6.2 s instead of 1.7 s to import the CLI.
PIP_INSTALL := $(BIN)/python -m pip install -qq --disable-pip-version-check --no-compile
COMPILE := $(BIN)/python -m compileall -q -j0 $(VENV)/lib heliox_orchestration > /dev/null
$(VENV)/.installed-runtime: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -c constraints.txt -e .
	$(COMPILE)
	touch $@

$(VENV)/.installed: $(VENV)/.installed-runtime
	$(PIP_INSTALL) -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip check
	$(COMPILE)
	touch $@

# The embedded instance file lives under deploy/embedded/, not in this folder: Dagster warns
# about a dagster.yaml in the working directory that DAGSTER_HOME does not use.
$(DAGSTER_HOME)/dagster.yaml: deploy/embedded/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp deploy/embedded/dagster.yaml $@

# The main job at once (its message printed), then the UI: `dagster dev` under
# heliox_orchestration/devserver.py, which ends it and everything it started within seconds of
# Ctrl-C. The demo feed sensor then keeps the demo live and the alert jobs follow within minutes.
run: $(VENV)/.installed-runtime $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/heliox doctor
	$(BIN)/heliox run daily-summary
	$(BIN)/python -m heliox_orchestration.devserver -w workspace.yaml -p $(PORT)

test: install
	$(BIN)/pytest -n auto

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

constraints: install
	( echo '# Exact versions of every installed package (pip freeze). Regenerate with `make constraints`.'; \
	  $(BIN)/python -m pip freeze --exclude-editable ) > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
