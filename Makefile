# Açar: two commands on a fresh Debian machine.
#   make run    create .venv, install, `acar init`, serve http://localhost:8000 (SQLite under ./var)
#   make test   install what the tests need (apt-get when root), lint, run the suite on SQLite and PostgreSQL
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
SYSTEM_PACKAGES := softhsm2 openssl procps
PYTEST_ARGS ?=

.PHONY: run test lint test-sqlite test-postgresql system-deps install clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: install
	$(BIN)/acar init
	exec $(BIN)/acar serve --host 127.0.0.1 --port 8000

# System packages the tests drive for real (SoftHSM2 behind PKCS#11, openssl as the independent checker).
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing || \
	     (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing)) >/dev/null; \
	  else echo "missing system packages:$$missing (run make test as root, or install them)" >&2; exit 1; fi; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@db=$$(mktemp -d)/check.sqlite3; \
	  ACAR_DATABASE_URL=sqlite+aiosqlite:///$$db $(BIN)/alembic upgrade head >/dev/null && \
	  ACAR_DATABASE_URL=sqlite+aiosqlite:///$$db $(BIN)/alembic check; rm -f $$db

test-sqlite: install system-deps
	ACAR_TEST_DB=sqlite $(BIN)/pytest -m "not multinode and not postgresql" $(PYTEST_ARGS)

test-postgresql: install system-deps
	ACAR_TEST_DB=postgresql $(BIN)/pytest $(PYTEST_ARGS)

test: install system-deps lint test-sqlite test-postgresql

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
