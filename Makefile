# Two commands for a newcomer: `make run` (set up; ingest, evaluate, gate, promote the sample) and `make test` (set up, check, test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCE ?= datasets/python-docs

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1

.PHONY: install run up down test lint typecheck bench mutation calibration models peer clean

$(BIN)/ragops: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(BIN)/ragops

# The pipeline through the local Prefect server (started, or reused, with its UI and a worker; deployments deployed).
run: up
	$(BIN)/ragops run $(SOURCE)

up: install
	$(BIN)/ragops server start --deploy

down: install
	$(BIN)/ragops server stop

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/deptry .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

# Every benchmark of BENCHMARKS.md on this machine (about 31 minutes on 2 cores), then rewrite BENCHMARKS.md.
bench: install
	$(BIN)/python benchmarks/embedding_cpu.py
	$(BIN)/python benchmarks/query_latency.py
	$(BIN)/python benchmarks/evaluation.py
	$(BIN)/python benchmarks/sources.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/serve_load.py
	$(BIN)/python benchmarks/report.py

# Mutation testing (mutmut) of the modules that decide, each against its fast unit tests: minutes per module, so not
# in .ci/run. Default: every module of benchmarks/mutation.py (TESTS); `make mutation MODULES=evaluations/gate.py`.
MODULES ?=
mutation: install
	$(BIN)/python benchmarks/mutation.py $(MODULES)

# The gate's operating characteristics (benchmarks/gate_calibration.py): candidates of known effect on the sample and
# on the venv's package descriptions, judged in many trials; about an hour on 2 busy cores (QUICK=--quick: minutes).
QUICK ?=
calibration: install
	$(BIN)/python benchmarks/gate_calibration.py $(QUICK)
	$(BIN)/python benchmarks/report.py

# Embedding models side by side (benchmarks/models.py, BENCHMARKS.md §15): throughput in rotated rounds, golden-set
# metrics on each model's own chunking, the prompt ablation; ~20 min on a quiet 2-core machine with an empty cache
# (e5 embeds the whole sample), ~10 min after. `QUICK=--quick` for a 40-document smoke run. Then the Spanish corpus.
models: install
	$(BIN)/python benchmarks/models.py $(QUICK)
	$(BIN)/python benchmarks/multilingual.py
	$(BIN)/python benchmarks/report.py

# A JSONL corpus through `ragops ingest` and LlamaIndex's IngestionPipeline side by side (benchmarks/jsonl_peer.py):
# full ingests, then alternating no-change runs; the peer lives in its own venv, .venv-peer, made from
# benchmarks/peer-requirements.txt when missing or older. About 40 minutes on 2 busy cores (mostly the full ingests).
.venv-peer/.installed: benchmarks/peer-requirements.txt
	$(PYTHON) -m venv .venv-peer
	.venv-peer/bin/python -m pip install --quiet --upgrade pip
	.venv-peer/bin/python -m pip install --quiet -r benchmarks/peer-requirements.txt
	touch $@

peer: install .venv-peer/.installed
	$(BIN)/python benchmarks/jsonl_peer.py

clean:
	rm -rf $(VENV) .ragops .pytest_cache .mypy_cache .ruff_cache *.egg-info
