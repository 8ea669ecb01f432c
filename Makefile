# Açar: two commands on a fresh Debian machine.
#   make run    create .venv, install, `acar init`, serve http://localhost:8000 (SQLite under ./var)
#   make test   install what the tests need (apt-get when root; starts Redis), lint, run the suite on SQLite and PostgreSQL
#   make bench  every benchmark of bench/ (~15 min on 2 cores; BENCH_QUICK=1: a smoke run of a few minutes), on PostgreSQL,
#               and the table at the top of docs/performance.md rewritten (bench/run_all.py)
SHELL := /bin/bash
# The interpreter of .venv: the system's own python3 (/usr/bin/python3: Debian's, built with profile-guided and
# link-time optimisation, as the container image's python:3.11-slim is) when it is 3.11 or newer, else python3 on
# PATH. An interpreter built without those (pyenv's default build) costs 12-15% more CPU per request
# (docs/performance.md, "Which Python"). PYTHON=... chooses another; `make clean` first to rebuild an existing .venv.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(or $(shell /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && \
  echo /usr/bin/python3),python3)
endif
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
SYSTEM_PACKAGES := softhsm2 openssl procps chromium chromium-driver redis-server poppler-utils qpdf libnss3-tools xmlsec1 fonts-noto-mono ghostscript mupdf-tools libreoffice-writer-nogui fonts-dejavu-core util-linux postgresql nginx
PYTEST_ARGS ?=

.PHONY: run test lint test-sqlite test-postgresql fuzz system-deps browser-deps redis python-check install clean \
	bench bench-deps

# Python 3.11+ with venv support (Debian ships venv in python3-venv: installed here when run as root).
python-check:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Açar needs Python 3.11 or newer ($(PYTHON) is $$($(PYTHON) -V 2>&1))" >&2; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv || \
	     (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv)) >/dev/null; \
	  else echo "$(PYTHON) lacks venv support: install python3-venv" >&2; exit 1; fi

$(STAMP): pyproject.toml constraints.txt | python-check
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: install
	$(BIN)/acar init
	exec $(BIN)/acar serve --host 127.0.0.1 --port 8000

# System packages the tests drive for real (SoftHSM2 behind PKCS#11, openssl as the independent checker; qpdf,
# Ghostscript, MuPDF, LibreOffice Writer and Chromium produce the PDFs the input-policy tests sign; PostgreSQL's
# initdb and pg_ctl run the throwaway cluster the restart test restarts, tests/pg_cluster.py).
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing || \
	     (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing)) >/dev/null; \
	  else echo "missing system packages:$$missing (run make test as root, or install them)" >&2; exit 1; fi; \
	fi

# The rate-limit tests run against a real Redis on 127.0.0.1:6379 (a missing Redis fails them): started here,
# as a daemon of this machine, when none answers there.
redis: system-deps
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || \
	  { redis-server --daemonize yes --port 6379 --bind 127.0.0.1 --save '' --appendonly no >/dev/null && \
	    for i in 1 2 3 4 5 6 7 8 9 10; do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done; \
	    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "redis-server did not start on 6379" >&2; exit 1; }; }

# axe-core (npm, pinned by tests/browser/package-lock.json) for the browser tests' accessibility checks;
# Node.js and npm come from Debian when missing (run as root). No browser is downloaded: Debian's Chromium runs.
BROWSER_STAMP := tests/browser/node_modules/.installed-$(shell cat tests/browser/package-lock.json | sha256sum | cut -c1-12)
$(BROWSER_STAMP): tests/browser/package-lock.json
	@command -v npm >/dev/null || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm || \
	     (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm)) >/dev/null; \
	  else echo "npm is missing (install nodejs and npm)" >&2; exit 1; fi
	cd tests/browser && npm ci --no-audit --no-fund --silent
	@rm -f tests/browser/node_modules/.installed-* && touch $@

browser-deps: $(BROWSER_STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@db=$$(mktemp -d)/check.sqlite3; \
	  ACAR_DATABASE_URL=sqlite+aiosqlite:///$$db $(BIN)/alembic upgrade head >/dev/null && \
	  ACAR_DATABASE_URL=sqlite+aiosqlite:///$$db $(BIN)/alembic check; rm -f $$db

test-sqlite: install system-deps redis browser-deps
	ACAR_TEST_DB=sqlite $(BIN)/pytest -m "not multinode and not postgresql" $(PYTEST_ARGS)

test-postgresql: install system-deps redis browser-deps
	ACAR_TEST_DB=postgresql $(BIN)/pytest -m "not nodb" $(PYTEST_ARGS)

# The two database passes run side by side (one per core; each prints its output when it ends): they share
# nothing but the servers (throwaway PostgreSQL databases, random Redis prefixes, free ports).
test: system-deps redis install browser-deps lint
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgresql

# The schemathesis run of `make test` (tests/functional/test_schemathesis.py), longer: FUZZ_EXAMPLES per operation,
# generation mode and credential set, from seed FUZZ_SEED (change it to explore other inputs).
FUZZ_EXAMPLES ?= 300
FUZZ_SEED ?= 19
fuzz: install
	ACAR_TEST_DB=postgresql ACAR_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) ACAR_FUZZ_SEED=$(FUZZ_SEED) \
	  $(BIN)/pytest -p no:cacheprovider tests/functional/test_schemathesis.py $(PYTEST_ARGS)

# The benchmarks (bench/run_all.py runs them all and writes docs/performance.md's table): wrk from Debian (as root),
# the token benchmark's peer harness (node-oidc-provider, pinned by its package-lock.json) copied from BENCH_PEER
# to BENCH_HARNESS and installed with npm ci; its token checker runs on this checkout's venv (PyJWT). PostgreSQL must
# answer on 127.0.0.1:5432 as for make test. BENCH_QUICK=1: one short run per figure; BENCH_ARGS: more options
# (--only token,pki --sqlite --no-write ...).
BENCH_PEER ?= ../shared/bench
BENCH_HARNESS ?= /tmp/acar-bench
BENCH_QUICK ?=
BENCH_ARGS ?=

bench-deps: system-deps
	@command -v wrk >/dev/null || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk || \
	     (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk)) >/dev/null; \
	  else echo "wrk is missing (apt-get install wrk)" >&2; exit 1; fi
	@command -v npm >/dev/null || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm || \
	     (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm)) >/dev/null; \
	  else echo "npm is missing (install nodejs and npm)" >&2; exit 1; fi
	@test -f $(BENCH_PEER)/bench.sh || { echo "no peer harness at BENCH_PEER=$(BENCH_PEER)" >&2; exit 1; }
	@stamp=$(BENCH_HARNESS)/node_modules/.installed-$$(cat $(BENCH_PEER)/package-lock.json $(BENCH_PEER)/*.sh \
	    $(BENCH_PEER)/*.py $(BENCH_PEER)/*.mjs $(BENCH_PEER)/*.lua | sha256sum | cut -c1-12); \
	  test -f $$stamp || { rm -rf $(BENCH_HARNESS) && cp -r $(BENCH_PEER) $(BENCH_HARNESS) && \
	    (cd $(BENCH_HARNESS) && npm ci --no-audit --no-fund --silent) && touch $$stamp; }
	@pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL does not answer on 127.0.0.1:5432 (as make test \
	  needs it); start it, or run with BENCH_ARGS=--sqlite" >&2; exit 1; }

bench: install bench-deps
	PVENV=$(abspath $(VENV)) ACAR_BENCH_HARNESS=$(BENCH_HARNESS) $(BIN)/python bench/run_all.py \
	  $(if $(BENCH_QUICK),--quick) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache tests/browser/node_modules

# The container image (Dockerfile: ENTRYPOINT `acar start`, CMD serve; `worker` as the command runs a signing
# worker). Built only where a container builder works (docker with a running daemon, or podman); elsewhere this
# target says so and fails. Either way tests/functional/test_container_entrypoint.py tests the image's steps
# outside a container: the wheel, a clean virtual environment, the entrypoint on an empty data dir.
IMAGE ?= acar:latest
.PHONY: image
image:
	@if command -v docker >/dev/null && docker info >/dev/null 2>&1; then docker build -t $(IMAGE) .; \
	elif command -v podman >/dev/null && podman info >/dev/null 2>&1; then podman build -t $(IMAGE) .; \
	else echo "make image: no container builder here (docker without a daemon, no podman); the entrypoint's" \
	  "steps are tested by tests/functional/test_container_entrypoint.py" >&2; exit 1; fi
