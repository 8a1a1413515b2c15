# gridshift developer entry points. `make run` and `make test` are the two quick-start commands;
# `make demo` runs the daemon offline on bundled real data (config/demo.toml).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHECKSUM := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# One stamp per install kind: running needs the package alone, testing adds its extras.
RUN_STAMP := $(VENV)/.installed-run-$(CHECKSUM)
TEST_STAMP := $(VENV)/.installed-test-$(CHECKSUM)
DEMO := $(BIN)/gridshift --config config/demo.toml

.PHONY: run demo test bench clean venv

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	rm -f $(VENV)/.installed-run-*
	touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,plot]'
	rm -f $(VENV)/.installed-test-*
	touch $(TEST_STAMP)

venv: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/gridshift db upgrade
	$(BIN)/gridshift daemon

demo: $(RUN_STAMP)
	$(DEMO) db upgrade
	@echo "demo daemon starting (Ctrl-C stops it); in another terminal:"
	@echo "  $(DEMO) forecast"
	@echo "  $(DEMO) submit --duration 2h --within 24h -- sleep 60"
	$(DEMO) daemon

test: $(TEST_STAMP)
	$(BIN)/ruff check scheduler tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/planner.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
