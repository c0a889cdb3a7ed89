# asc-search: `make demo` runs the search on real audio, `make test` runs the tests.
# `make install` builds .venv following RECIPES.md (torch CPU wheel first, onnx2tf/tf-keras with --no-deps).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= ../shared/data
DEMO_OUT ?= runs/demo-esc10
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo demo-fsdd test test-fast lint clean bench bench-scale

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps onnx2tf==1.29.24 tf-keras==2.21.0
	$(BIN)/pip install -q --pre tflite-micro==0.dev20261023182759
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

# The main job on the bundled real data: ESC-10 fold 1 train, fold 2 validation, fold 3 test (README: why),
# DCASE 2022 budget, dominated trials stopped at their MO-ASHA rung.
demo: install
	rm -rf $(DEMO_OUT)
	$(BIN)/asc-search --budget dcase2022 --data $(DATA)/esc10-dev --val-fold 2 --test-fold 3 --trials 20 --epochs 16 --scheduler mo-asha --seed 0 --out $(DEMO_OUT)

# The same search on 8 kHz speech (Free Spoken Digit Dataset); its split column gives the three splits.
demo-fsdd: install
	rm -rf runs/demo-fsdd
	$(BIN)/asc-search --budget dcase2022 --data $(DATA)/fsdd --trials 20 --epochs 16 --scheduler mo-asha --seed 0 --out runs/demo-fsdd

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow" tests

# Benchmarks (bench/*.py, full settings; each writes bench/results/*.json), then BENCHMARKS.md from them.
# Under 60 minutes on the 2-core machine; add --quick to a script for a smoke run.
bench:
	test -f $(STAMP) || $(MAKE) install
	mkdir -p bench/results && date +%s > bench/results/started_at
	$(BIN)/python bench/frontends.py
	$(BIN)/python bench/trainer.py --epochs 1 --repeats 3
	$(BIN)/python bench/orchestration.py --trials 40
	$(BIN)/python bench/export.py --exports 2
	$(BIN)/python bench/search_quality.py --trials 8 --epochs 1 --seeds 0,1,2 --time-limit-s 120
	$(BIN)/python bench/stages.py --epochs 15 --seeds 0,1,2 --groups augmentation,basd,cssd,pruning,pool
	$(BIN)/python bench/stages.py --epochs 15 --seeds 0,1,2 --groups qat --name stages_qat --no-ensemble
	$(BIN)/python bench/report.py

# Data at scale (issue 15, not part of `make bench`: 20,000 clips take about 15 min here, 230,350 over an hour).
N ?= 20000
bench-scale:
	test -f $(STAMP) || $(MAKE) install
	$(BIN)/python bench/scale.py $(N) -- --sample-rates-hz 16000

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache
