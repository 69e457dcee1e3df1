# tcpdispatch developer entry points. Everything runs from a local .venv.
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
# Two installs into one venv: what the demo needs (the `server` extra), and on top of it what the
# tests and benchmarks need (test, redis, bench). `make demo` never pulls matplotlib.
STAMP    = $(VENV)/.installed-server
TESTSTAMP = $(VENV)/.installed-test

.PHONY: install demo test test-unit lint fuzz soak bench bench-quick sim-scale sim-validate clean

$(STAMP): pyproject.toml setup.py src/tcpdispatch/_speedups.c
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[server]'
	touch $(STAMP)

$(TESTSTAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[server,test,redis,bench]'
	touch $(TESTSTAMP)

install: $(TESTSTAMP)

## The main job: the whole system on loopback (one dispatcher, gateways, clients), no Redis/nginx.
## It prints the live dashboard's URL (http://127.0.0.1:PORT/ui/) once the dispatcher is up;
## `make demo DEMO_ARGS=--linger` keeps the system running after the script until Ctrl-C.
demo: $(STAMP)
	@echo "tcpdispatch demo: the live dashboard's URL (.../ui/) is printed once the dispatcher is up"
	$(BIN)/tcpdispatch demo $(DEMO_ARGS)

## The full test suite (integration tests skip when nginx/haproxy/redis are missing, unless
## TCPDISPATCH_REQUIRE_INTEGRATION=1, which .ci/run sets).
test: $(TESTSTAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-unit: $(TESTSTAMP)
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

lint: $(TESTSTAMP)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src
	$(BIN)/lint-imports

fuzz: $(TESTSTAMP)
	$(BIN)/pip install -q -e '.[fuzz]'
	$(BIN)/python -m bench.fuzz_codec --runs $${RUNS:-1000000}

soak: $(TESTSTAMP)
	$(BIN)/python -m bench.soak --minutes $${MINUTES:-10}

bench: $(TESTSTAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(TESTSTAMP)
	$(BIN)/python -m bench --quick

## Every `tcpdispatch simulate` scenario at 1,000,000 clients (docs/simulation.md); SIM_ARGS to narrow.
sim-scale: $(TESTSTAMP)
	$(BIN)/python -m bench.sim_scale $(SIM_ARGS)

## The simulator against the real failover and balance benchmarks, side by side.
sim-validate: $(TESTSTAMP)
	$(BIN)/python -m bench.sim_validate

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
