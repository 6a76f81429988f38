# The two commands a newcomer needs: `make demo` and `make test`. Both build .venv/ themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: demo demo-cluster test lint typecheck imports system-deps pytest compliance bench fuzz soak clean

$(STAMP): pyproject.toml setup.py setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The chat example (examples/chat/): it logs the URL to open; log in as alice, bob or carol.
# One process, no Redis. MLSOCKETS_BIND is the serve command's default --bind.
demo: $(STAMP)
	MLSOCKETS_BIND=127.0.0.1:$(PORT) $(BIN)/mlsockets serve "examples.chat:create_app()"

# The chat example as a cluster: gunicorn with two mlsockets workers on $(PORT), a standalone
# node on $(PORT)+1, and a redis-server of its own on a free port. Ctrl-C stops everything.
demo-cluster: $(STAMP)
	PORT=$(PORT) PYTHON=$(CURDIR)/$(BIN)/python bash deploy/local-cluster.sh --demo

test: lint typecheck imports system-deps pytest

# Tests use the real things: a redis-server they start themselves on free ports, and Debian's
# chromium for the browser client. Installed here when missing and we are root (CI is).
system-deps:
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; } || \
		echo "warning: no redis-server: cluster tests will be skipped (they fail under CI=true)"
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "warning: no chromium: browser tests will be skipped (they fail under CI=true)"
	@{ command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null && command -v openssl >/dev/null || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx openssl >/dev/null; } || \
		echo "warning: no nginx or openssl: tests/deploy skips the nginx recipes (fails under CI=true)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/python -m gevent.monkey --module pytest -m "not slow" --cov --cov-report=term $(PYTEST_ARGS)
	$(BIN)/python -m coverage report --include='mlsockets/protocol/*' --fail-under=100

compliance: $(STAMP)
	bash benchmarks/compliance.sh

# BENCH_ARGS: passed to bench.sh, e.g. make bench BENCH_ARGS="-r 1 -s echo32,echo4k -d 2"
bench: $(STAMP)
	bash benchmarks/bench.sh $(BENCH_ARGS)

# Every fuzz target for FUZZ_SECONDS each (docs/fuzzing.md); FUZZ_ARGS="--merge" adds what
# they found to fuzz/corpus/. Output and reproducers go to fuzz/out/.
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(BIN)/python fuzz/run.py all $(FUZZ_SECONDS) $(FUZZ_ARGS)

# Reliability at full scale (docs/reliability.md): slow consumers among 1,000 readers, abuse,
# SIGTERM with 5,000 clients and HUP, then 10,000 connections for SOAK_MINUTES. Results and
# logs in benchmarks/results/soak/; SOAK_ARGS="--only slow,abuse" picks scenarios.
SOAK_MINUTES ?= 10
soak: $(STAMP)
	SOAK_MINUTES=$(SOAK_MINUTES) $(BIN)/python -m benchmarks.soak.run $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage
