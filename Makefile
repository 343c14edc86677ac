# `make` creates the virtual environment .venv and installs the project into it; `make help`
# lists the targets, one line each (from the `## target: text` comments). Every target
# installs what it needs first.

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
# make search: python -m cifar_cnn.search run (docs/search.md): TRIALS trials of EPOCHS epochs
# on the training images less VAL_SIZE held out for validation (unset: the values in
# conf/hparams_search/optuna.yaml), JOBS trials (and retraining runs) at once, the best trial
# and the study's best retrained over SEARCH_SEEDS (unset: 0,1,2); SEARCH_DIR=DIR resumes a
# search and retrains only the runs still missing; ARGS go to every training command.
TRIALS   ?=
EPOCHS   ?=
VAL_SIZE ?=
SEARCH_SEEDS ?=
SEARCH_DIR ?=

.PHONY: help install install-search study beyond sweep report status search test test-fast \
	lint bench bench-grid bench-gpu bench-overhead bench-augment bench-cache-key bench-pruning \
	tensorboard clean dashboard
.DEFAULT_GOAL := install

## help: list the targets
help:
	@awk -F': ' '/^## [a-z-]+: / {printf "  make %-15s %s\n", substr($$1, 4), \
		substr($$0, length($$1) + 3)}' $(MAKEFILE_LIST)

## install: .venv with the project (editable) and what the study and tests need (default)
install: $(BIN)/.installed

## install-search: install, plus the search's extra (make search and make test do this)
install-search: $(BIN)/.installed-search

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(BIN)/.installed-search: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[dev,search,searchtest]'
	touch $@

GRID := $(BIN)/python -m cifar_cnn.train -m 'experiment=glob(*)' seed=$(SEEDS) \
	hydra.sweep.dir=$(SWEEP_DIR) $(LAUNCH) $(ARGS)

## study: train every published configuration (SEEDS, JOBS, ARGS), then the report
# The report is written even when some jobs failed (it lists them), and make then fails.
study: $(BIN)/.installed
	@echo "sweep directory: $(SWEEP_DIR) (progress: make status SWEEP_DIR=$(SWEEP_DIR))"
	$(GRID); status=$$?; $(BIN)/python -m cifar_cnn.report $(SWEEP_DIR) && exit $$status

# make beyond: every experiment file of conf/experiment/beyond/ (Hydra's glob() does not
# list a nested folder), in a sweep of its own unless SWEEP_DIR names one.
comma := ,
empty :=
space := $(empty) $(empty)
BEYOND = $(subst $(space),$(comma),$(patsubst conf/experiment/%.yaml,%,$(sort \
	$(wildcard conf/experiment/beyond/*.yaml))))
BEYOND_DIR = $(if $(filter file,$(origin SWEEP_DIR)),outputs/multiruns/$(STAMP)_beyond,$(SWEEP_DIR))

## beyond: train every row of conf/experiment/beyond/ (SEEDS, JOBS, ARGS), then the report
beyond: $(BIN)/.installed
	@test -n "$(BEYOND)" || { echo "conf/experiment/beyond/ holds no *.yaml: add a row" \
		"(docs/development.md, Add a row)"; exit 1; }
	@echo "sweep directory: $(BEYOND_DIR)"
	$(BIN)/python -m cifar_cnn.train -m experiment=$(BEYOND) seed=$(SEEDS) \
		hydra.sweep.dir=$(BEYOND_DIR) $(LAUNCH) $(ARGS); \
		status=$$?; $(BIN)/python -m cifar_cnn.report $(BEYOND_DIR) && exit $$status

## sweep: only the training grid
sweep: $(BIN)/.installed
	@echo "sweep directory: $(SWEEP_DIR)"
	$(GRID)

## report: the report of SWEEP (default: the newest sweep in outputs/multiruns)
report: $(BIN)/.installed
	$(BIN)/python -m cifar_cnn.report $(SWEEP)

## status: each job of SWEEP_DIR (default: the newest sweep): its state, epoch, time left
status: $(BIN)/.installed
	@$(BIN)/python -m cifar_cnn.status $(SWEEP) \
		$(if $(filter command line environment,$(origin SWEEP_DIR)),$(SWEEP_DIR))

## search: a hyperparameter search, its best and the study's best retrained, the report
# hparams_search=optuna, then the best trial (retrain/found) and the study's best
# configuration (retrain/study) retrained over SEARCH_SEEDS at the same budget and validation
# split, then the report: did the search beat the study on the test set?
search: $(BIN)/.installed-search
	$(BIN)/python -m cifar_cnn.search run $(SEARCH_DIR) $(if $(TRIALS),--trials $(TRIALS)) \
		$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(VAL_SIZE),--val-size $(VAL_SIZE)) \
		$(if $(SEARCH_SEEDS),--seeds $(SEARCH_SEEDS)) $(if $(JOBS),--jobs $(JOBS)) -- $(ARGS)

## dashboard: serve optuna-dashboard on the study of SEARCH_DIR (DASHBOARD_PORT, DASHBOARD_HOST)
# http://127.0.0.1:8080 by default, live while the search runs; DASHBOARD_HOST=0.0.0.0: to the
# network. The study is read wherever the search keeps it (docs/search.md).
DASHBOARD_PORT ?= 8080
DASHBOARD_HOST ?= 127.0.0.1
dashboard: $(BIN)/.installed-search
	@test -n "$(SEARCH_DIR)" || { echo "usage: make dashboard SEARCH_DIR=DIR"; exit 2; }
	$(BIN)/python -m cifar_cnn.search dashboard $(SEARCH_DIR) --port $(DASHBOARD_PORT) \
		--host $(DASHBOARD_HOST)

## test: the whole test suite (CPU, synthetic data; it covers the search too)
test: $(BIN)/.installed-search
	$(BIN)/python -m pytest -q

## test-fast: the tests that do not start the CLI in subprocesses (not marked slow)
test-fast: $(BIN)/.installed-search
	$(BIN)/python -m pytest -q -m "not slow"

## lint: ruff check and ruff format --check
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## bench: images/s of the study's pipeline vs cifar_cnn vs a plain loop
# BENCH_ARGS='--data PATH' (or CIFAR_CNN_DATA=PATH) times start-up on an image folder or .tar.gz
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

## bench-grid: wall time of the grid: sequential, JOBS parallel, parallel + bf16
# A few epochs each: sequential fp32, JOBS parallel jobs (default: the usable CPUs), parallel +
# bf16 (under 10 min on 2 cores); BENCH_ARGS='--data PATH' (or CIFAR_CNN_DATA=PATH) for an
# image folder or .tar.gz of one.
bench-grid: $(BIN)/.installed
	$(BIN)/python benchmarks/grid.py $(if $(JOBS),--jobs=$(JOBS)) $(BENCH_ARGS)

## bench-gpu: the whole study's time on this GPU, measured in 9 minutes (docs/gpu.md)
# Seconds per epoch of the 10 configurations at 1-16 jobs per GPU, fp32 and bf16, CUDA MPS,
# speed levers; BENCH_ARGS=--quick runs the same code path on a CPU in under 3 minutes.
bench-gpu: $(BIN)/.installed
	$(BIN)/python benchmarks/gpu.py $(BENCH_ARGS)

## bench-pruning: trial-epochs, wall time and best recall of a search with and without pruning
# BENCH_ARGS='--data PATH' (or CIFAR_CNN_DATA=PATH) on an image folder or .tar.gz; about 15 min
# on 2 cores (docs/search.md); BENCH_ARGS=--quick: a smoke run on synthetic data.
bench-pruning: $(BIN)/.installed-search
	$(BIN)/python benchmarks/pruning.py $(BENCH_ARGS)

## bench-overhead: host time per step the Trainer path adds to a plain loop (about 15 s)
bench-overhead: $(BIN)/.installed
	$(BIN)/python benchmarks/overhead.py $(BENCH_ARGS)

## bench-augment: seconds per epoch with and without data.augment (flip, crop 4), alternating
# 5 rounds of a process each way, 3 epochs each, on synthetic images (about 5 minutes on a quiet
# 2-core machine); BENCH_ARGS='--data PATH' (or CIFAR_CNN_DATA=PATH) for an image folder or .tar.gz.
bench-augment: $(BIN)/.installed
	$(BIN)/python benchmarks/augment.py $(BENCH_ARGS)

## bench-cache-key: what keying the image cache by the files' bytes costs (DATA_ROOT=image folder)
bench-cache-key: $(BIN)/.installed
	$(BIN)/python benchmarks/cache_key.py $(DATA_ROOT) $(BENCH_ARGS)

## tensorboard: serve outputs/ at http://localhost:6006 (TB_HOST=0.0.0.0: to the network)
TB_HOST ?= localhost
TB_PORT ?= 6006
tensorboard: $(BIN)/.installed
	$(BIN)/tensorboard --logdir outputs --host $(TB_HOST) --port $(TB_PORT)

## clean: remove .venv and the tools' caches (outputs/ and data/ stay)
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
