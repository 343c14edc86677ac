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

.PHONY: study sweep report figures test lint bench bench-overhead tensorboard clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

GRID := $(BIN)/python -m cifar_cnn.train -m 'experiment=glob(*)' seed=$(SEEDS) \
	hydra.sweep.dir=$(SWEEP_DIR) $(ARGS)

## study: train every published configuration, then write the report (figures, tables);
## the report is written even when some jobs failed (it lists them), and make then fails
study: $(BIN)/.installed
	@echo "sweep directory: $(SWEEP_DIR)"
	$(GRID); status=$$?; $(BIN)/python -m cifar_cnn.report $(SWEEP_DIR) && exit $$status

## sweep: only the training grid
sweep: $(BIN)/.installed
	@echo "sweep directory: $(SWEEP_DIR)"
	$(GRID)

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

## bench-overhead: host time per step the Trainer path adds to a plain loop (about 15 s)
bench-overhead: $(BIN)/.installed
	$(BIN)/python benchmarks/overhead.py

tensorboard: $(BIN)/.installed
	$(BIN)/tensorboard --logdir outputs --bind_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
