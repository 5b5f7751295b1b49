# The two commands of the README.  Both set everything up first.
# The interpreter the venv is made from: scripts/pick-python says which and why, unless
# PYTHON is given (make setup PYTHON=/path/to/python3).
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell ./scripts/pick-python)
endif
VENV   := .venv
PY     := $(VENV)/bin/python
# Named after the interpreter: another PYTHON makes the venv anew (and the SIP core with it).
STAMP  := $(VENV)/.installed$(subst /,-,$(PYTHON))

.PHONY: run test setup system-packages bytecode lint bench clean

run: setup
	$(PY) run_topology.py

test: setup
	$(PY) -m pytest

SIP_SOURCES := $(wildcard emulator/sip/*.py)
SIP_BUILD   := emulator/sip/compiled.json

setup: $(STAMP) system-packages $(SIP_BUILD) bytecode

# The sans-IO SIP core compiled with mypyc, about twice as fast; rebuilt when a source
# changes (and emulator/sip/compiled.py runs the sources while the build is stale).
$(SIP_BUILD): $(SIP_SOURCES) scripts/compile_sip.py $(STAMP)
	$(PY) scripts/compile_sip.py

# What pip does for an installed package and cannot for an editable one: without it,
# where PYTHONDONTWRITEBYTECODE is set, every start compiles the sources again (0.25 s
# of a 1 s start-up).  Cheap when nothing changed: it compares timestamps.
bytecode: $(STAMP)
	$(PY) -m compileall -q emulator nodes run_topology.py

$(STAMP): pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

# Debian packages the tests use: tshark (capture checks) and sip-tester (sipp), and gcc
# for the compiled SIP core.
# Installed only when running as root and only when missing.
system-packages:
	@./scripts/install-system-packages.sh

lint: setup
	$(VENV)/bin/ruff check emulator nodes tests benchmarks run_topology.py
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/register_rate.py

clean:
	[ ! -x $(PY) ] || $(PY) scripts/compile_sip.py --clean
	rm -rf build $(VENV) .pytest_cache .mypy_cache .ruff_cache
