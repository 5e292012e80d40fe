# mnist-cnn: `make run` trains, evaluates and predicts the samples; `make test` runs every test.
# Both create .venv and install everything first (idempotent: seconds when already done).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0

.PHONY: setup run test bench bench-tf models clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(STAMP)  ## create .venv and install torch (CPU build), the project with its train and report extras, the test tools

$(STAMP): pyproject.toml Makefile scripts/setup-system.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[train,report,test]'
	bash scripts/setup-system.sh
	touch $(STAMP)

run: setup  ## train with the defaults on the bundled MNIST, evaluate, predict every image in samples/
	$(BIN)/mnist-cnn train
	$(BIN)/mnist-cnn evaluate --out runs/mnist/report
	$(BIN)/mnist-cnn predict samples/*.png

test: setup  ## the whole test suite (CPU; a few minutes on 2 cores)
	$(PY) -m pytest -q

bench: setup  ## every benchmark in bench/ (minutes; prints tables, writes bench/results/*.json)
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

bench-tf:  ## a venv with TensorFlow (.venv-tf) so that bench/bench_train.py also times the tutorial's own train.py
	test -x .venv-tf/bin/python || $(PYTHON) -m venv .venv-tf
	.venv-tf/bin/pip install -q tensorflow-cpu==2.21.0

models: setup  ## train every shipped model's recipe from scratch and publish it into mnist_cnn/models/ (long)
	$(PY) scripts/models.py

clean:  ## remove the venv and run folders
	rm -rf $(VENV) .venv-tf runs .pytest_cache
