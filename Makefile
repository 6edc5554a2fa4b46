# lightning_cnn: common tasks. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/quickstart.yaml
LOGDIR ?= lightning_logs
PYTEST_ARGS ?=
SWEEP ?= configs/sweeps/seed000_grid.yaml
BENCH_ARGS ?=
DEVICE_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test lint tensorboard report sweep results bench device-check clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## Create .venv and install the package with its dev tools

train: install ## Train CONFIG (default: the quickstart) on MNIST
	$(PY) -m lightning_cnn fit --config $(CONFIG)

# One pytest worker per core (pytest-xdist), a test file per worker, one thread each: threads of two
# workers on the same cores would wait on each other.
test: install ## Run the test suite (PYTEST_ARGS='-m "not slow"' skips the real-MNIST training)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadfile $(PYTEST_ARGS)

lint: install ## Check style with ruff
	$(PY) -m ruff check lightning_cnn tests benchmarks
	$(PY) -m ruff format --check lightning_cnn tests benchmarks

tensorboard: install ## Open the dashboard on the runs under LOGDIR
	$(VENV)/bin/tensorboard --logdir $(LOGDIR)

report: install ## Table (Markdown, CSV) and PNG curves of the runs under LOGDIR, in LOGDIR/report
	$(PY) -m lightning_cnn report --log_root $(LOGDIR)

sweep: install ## Run the sweep file SWEEP (default: seed 000's grid) and print its table
	$(PY) -m lightning_cnn sweep $(SWEEP)

results: install ## Rebuild docs/results.md from the runs under LOGDIR
	$(PY) -m lightning_cnn results --log_root $(LOGDIR) --out docs/results.md

bench: install ## Training/validation throughput, five ways, one table (BENCH_ARGS='--samples 64000 --repeats 5')
	$(PY) -m benchmarks.throughput $(BENCH_ARGS)

device-check: install ## On one GPU (<= 8 min): GPU tests, throughput, precision, time to 99% -> benchmarks/device_results.md (DEVICE_ARGS='--accelerator cpu --quick' on a CPU)
	$(PY) -m benchmarks.device_check $(DEVICE_ARGS)

clean: ## Remove run outputs and caches (keeps .venv and data/)
	find $(LOGDIR) -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -not -path './$(VENV)/*' -exec rm -rf {} +
