# make study   - the whole ablation grid (10 experiments x SEEDS) and its report
# make test    - the test suite (CPU, synthetic data, about a minute or two)
# Both create the virtual environment .venv on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SEEDS  ?= 0
ARGS   ?=
STAMP  := $(shell date +%Y-%m-%d_%H-%M-%S)
SWEEP_DIR ?= outputs/multiruns/$(STAMP)_study

.PHONY: study sweep report figures test lint bench tensorboard clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## study: train every published configuration, then write the report (figures, tables)
study: $(BIN)/.installed
	$(BIN)/python -m cifar_cnn.train -m 'experiment=glob(*)' seed=$(SEEDS) \
		hydra.sweep.dir=$(SWEEP_DIR) $(ARGS)
	$(BIN)/python -m cifar_cnn.report $(SWEEP_DIR)

## sweep: only the training grid (the sweep directory is printed at the start)
sweep: $(BIN)/.installed
	$(BIN)/python -m cifar_cnn.train -m 'experiment=glob(*)' seed=$(SEEDS) \
		hydra.sweep.dir=$(SWEEP_DIR) $(ARGS)

## report / figures: tables and PNGs for SWEEP (default: the newest sweep in outputs/multiruns)
report figures: $(BIN)/.installed
	$(BIN)/python -m cifar_cnn.report $(SWEEP)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## bench: images/s of the study's pipeline vs cifar_cnn vs a plain loop (benchmarks/RESULTS.md)
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

tensorboard: $(BIN)/.installed
	$(BIN)/tensorboard --logdir outputs --bind_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
