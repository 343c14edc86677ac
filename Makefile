# make study   - the whole ablation grid (10 experiments x SEEDS) and its report;
#                JOBS=N runs N jobs at once
# make test    - the whole test suite (CPU, synthetic data; about 5 minutes on 2 cores)
# make test-fast - the tests that do not start the CLI in subprocesses (about 15 s)
# Both create the virtual environment .venv on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SEEDS  ?= 0
ARGS   ?=
# JOBS=N runs N sweep jobs at once on this machine (hydra-joblib-launcher), each with
# 1/N of the CPUs; unset, the jobs run one after another.
JOBS   ?=
LAUNCH := $(if $(JOBS),hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS))
STAMP  := $(shell date +%Y-%m-%d_%H-%M-%S)
SWEEP_DIR ?= outputs/multiruns/$(STAMP)_study

.PHONY: study sweep report test test-fast lint bench bench-grid bench-overhead tensorboard clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

GRID := $(BIN)/python -m cifar_cnn.train -m 'experiment=glob(*)' seed=$(SEEDS) \
	hydra.sweep.dir=$(SWEEP_DIR) $(LAUNCH) $(ARGS)

## study: train every published configuration, then write the report (figures, tables);
## the report is written even when some jobs failed (it lists them), and make then fails
study: $(BIN)/.installed
	@echo "sweep directory: $(SWEEP_DIR)"
	$(GRID); status=$$?; $(BIN)/python -m cifar_cnn.report $(SWEEP_DIR) && exit $$status

## sweep: only the training grid
sweep: $(BIN)/.installed
	@echo "sweep directory: $(SWEEP_DIR)"
	$(GRID)

## report: tables and figures for SWEEP (default: the newest sweep in outputs/multiruns)
report: $(BIN)/.installed
	$(BIN)/python -m cifar_cnn.report $(SWEEP)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## bench: images/s of the study's pipeline vs cifar_cnn vs a plain loop (benchmarks/RESULTS.md);
## BENCH_ARGS='--data PATH' (or CIFAR_CNN_DATA=PATH) times start-up on an image folder or .tar.gz
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

## bench-grid: wall time of the 10-experiment grid for a few epochs: sequential fp32, JOBS
## parallel jobs (default: the usable CPUs), parallel + bf16 (under 10 min on 2 cores);
## BENCH_ARGS='--data PATH' (or CIFAR_CNN_DATA=PATH) for an image folder or .tar.gz of one
bench-grid: $(BIN)/.installed
	$(BIN)/python benchmarks/grid.py $(if $(JOBS),--jobs=$(JOBS)) $(BENCH_ARGS)

## bench-overhead: host time per step the Trainer path adds to a plain loop (about 15 s)
bench-overhead: $(BIN)/.installed
	$(BIN)/python benchmarks/overhead.py

## tensorboard: serve outputs/ at http://localhost:6006; TB_HOST=0.0.0.0 serves every interface
TB_HOST ?= localhost
tensorboard: $(BIN)/.installed
	$(BIN)/tensorboard --logdir outputs --host $(TB_HOST)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
