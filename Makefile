# Two commands matter: `make demo` (set up, start the sandbox, rehearse the whole rollout on it)
# and `make test` (set up, run the whole test suite). Both work as root on a fresh Debian machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PARAMS ?= parameters/sandbox.yaml
CAMPAIGN ?= demo-$(shell date -u +%Y%m%dT%H%M%SZ)

.PHONY: demo test host setup lab bench clean-outputs

demo: host setup
	$(BIN)/runbook sandbox up --params $(PARAMS)
	$(BIN)/runbook rehearse --params $(PARAMS) --campaign $(CAMPAIGN) --with-rollback

test: host setup
	$(BIN)/pytest $(PYTEST_ARGS)

# System programs the tool drives or the tests use, installed only when missing (root, Debian).
host:
	@$(PYTHON) runbook_lib/sandbox/hostdeps.py

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

lab: setup
	$(BIN)/runbook lab

bench: setup
	$(BIN)/python tests/bench/bench_run_overhead.py
