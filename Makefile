# Every target builds what it needs from nothing: the venv, the packages, the system packages tests use.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: install run test test-fast lint bench clean system-deps

# Debian packages the cluster tests run: sshd in network namespaces, a one-machine Slurm cluster.
SYSTEM_PKGS := openssh-server iproute2 slurm-wlm munge

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/dsrun --num_gpus 2 examples/train.py --deepspeed_config examples/ds_config.json

# Installs only what is missing (needs root, as in CI); quiet and a no-op once everything is there.
system-deps:
	@missing=$$(for p in $(SYSTEM_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test: install system-deps
	$(PY) -m pytest -q tests

# The in-process tests alone (no workers, hosts or clusters started): about half a minute.
test-fast: install
	$(PY) -m pytest -q tests/unit

lint: install
	$(VENV)/bin/ruff check dsrun tests bench examples
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/run.py

# The train-step and memory benchmarks with DeepSpeed included; DeepSpeed lives in bench/.venv-peers, never in .venv.
.PHONY: bench-peers
bench-peers:
	PYTHON=$(PYTHON) bench/peers.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
