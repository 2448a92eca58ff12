# Two commands do all the set-up: `make demo` and `make test` (each installs .venv first if needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast test-slurm bench tui lint clean

# torch and torchvision are installed by the same pip command (pyproject lists both), so pip
# picks a matched pair. The stamp makes this a no-op while .venv is newer than pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## train the `demo` experiment of experiments.toml (offline, CPU, about a minute)
	$(BIN)/expt run demo

# Two pytest workers (pytest-xdist; a module's tests stay on one worker, so its fixtures are built once): most
# tests wait on real worker processes, so two at a time use both cores. EXPT_TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= $(or $(EXPT_TEST_WORKERS),2)
test: $(STAMP)  ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

test-fast: $(STAMP)  ## the tests not marked slow
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope -m "not slow"

# A real one-node Slurm (scripts/slurm-up: Debian's slurm-wlm and munge, two fake GPUs; needs root), the tests
# marked slurm against it, and the cluster taken down again whatever happened (scripts/slurm-down). `make test`
# skips those tests where no cluster answers. EXPT_SLURM_DIR moves the cluster's scratch folder.
SLURM_DIR ?= $(or $(EXPT_SLURM_DIR),/tmp/expt-slurm)
test-slurm: $(STAMP)  ## the Slurm backend against a real Slurm brought up here and taken down after (a few minutes)
	@trap 'EXPT_SLURM_DIR=$(SLURM_DIR) scripts/slurm-down' EXIT; \
	EXPT_SLURM_DIR=$(SLURM_DIR) scripts/slurm-up || exit 1; \
	. $(SLURM_DIR)/env; start=$$(date +%s); \
	$(BIN)/python -m pytest -m slurm tests/test_slurm_cluster.py; rc=$$?; \
	echo "test-slurm: the tests took $$(( $$(date +%s) - start )) s"; exit $$rc

# The bench extra (MLflow) is installed only when missing, pinned to what .venv already holds, so it
# never changes an installed package; if it cannot be installed, the MLflow rows say so.
bench: $(STAMP)  ## benchmarks (about 12 minutes on 2 cores); writes bench/RESULTS.md
	@$(BIN)/python -c "import mlflow, sqlalchemy, alembic" 2>/dev/null || { mkdir -p bench/out && \
	  $(BIN)/python -m pip freeze --exclude-editable > bench/out/constraints.txt && \
	  $(BIN)/python -m pip install --quiet -c bench/out/constraints.txt -e ".[dev,bench]" || \
	  echo "bench: could not install the bench extra (MLflow); its baselines are skipped"; }
	$(BIN)/python bench/run.py

tui: $(STAMP)
	$(BIN)/expt tui

lint: $(STAMP)
	$(BIN)/lint-imports

clean:
	rm -rf runs runs.db runs.db-shm runs.db-wal .pytest_cache
