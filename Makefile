# Every target builds what it needs from nothing: the venv, the packages, the system packages tests use.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/dsrun --num_gpus 2 examples/train.py --deepspeed_config examples/ds_config.json

test: install
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check dsrun tests bench examples

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
