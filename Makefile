# vitquant: `make test` runs the test suite, `make book` executes every numbered notebook
# with papermill and builds the Jupyter Book. Both work from a fresh clone: they create
# the virtual environment and unpack the data first.
#
#   make test [PYTEST_ARGS="-k quant -x"]
#   make book [PROFILE=full] [RESULTS=results]     the published book (slow)
#   make book-quick                                 the same with the CI-sized profile
#       (each notebook reruns only when it, the library or its model's checkpoint changed; after
#       changing PAPERMILL_ARGS, `make clean` first)
#   make data [SHARED=../shared]                    unpack CIFAR-10 into .cache/data
#   make lab                                        JupyterLab in the project's venv
#   make clean                                      remove build/ and results/

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SHARED ?= ../shared
CIFAR10_SRC := $(SHARED)/data/cifar10-jpeg
CIFAR10_DIR := .cache/data/cifar10-jpeg

PROFILE ?= full
RESULTS ?= results
QUICK_RESULTS ?= results/quick
PYTEST_ARGS ?=
PAPERMILL_ARGS ?=
BOOK := build/book
# The book's notebooks are the ones _toc.yml lists (a notebook whose model has no shipped
# checkpoint yet stays out of the toc, and so out of the run).
NOTEBOOKS := $(sort $(addsuffix .ipynb,$(shell grep -oE 'notebooks/[0-9]{2}_[A-Za-z0-9_]+' _toc.yml)))

.PHONY: help venv data test book book-quick lab clean

help:
	@sed -n '1,/^$$/p' $(firstword $(MAKEFILE_LIST)) | sed 's/^# \{0,1\}//'

venv: $(STAMP)

# Re-run only when the pins or the package metadata change. pip leaves what already
# satisfies the pins alone, so an existing venv is not reinstalled. The venv is created
# only when missing: re-running `venv` over it could repoint it at another python3.
$(STAMP): requirements.txt pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -r requirements.txt
	$(VPY) -m pip install --no-deps -e .
	touch $@

# Idempotent: the unpack CLI skips a split whose .<split>.complete marker exists.
data: venv
	@if [ -d "$(CIFAR10_SRC)" ]; then \
	  echo "$(VPY) -m vitquant_core.data unpack --from $(CIFAR10_SRC) --to $(CIFAR10_DIR)"; \
	  $(VPY) -m vitquant_core.data unpack --from "$(CIFAR10_SRC)" --to "$(CIFAR10_DIR)"; \
	elif [ -f "$(CIFAR10_DIR)/.test.complete" ]; then \
	  echo "data: $(CIFAR10_SRC) not found; using the copy already unpacked in $(CIFAR10_DIR)"; \
	elif [ -n "$${VITQUANT_DATA:-}" ]; then \
	  echo "data: $(CIFAR10_SRC) not found; using VITQUANT_DATA=$$VITQUANT_DATA"; \
	else \
	  echo "error: no CIFAR-10 data. $(CIFAR10_SRC) does not exist and nothing is unpacked" >&2; \
	  echo "in $(CIFAR10_DIR) yet. Either point SHARED at the folder holding" >&2; \
	  echo "data/cifar10-jpeg/{train,test}.tar.gz (make data SHARED=/path/to/shared), or set" >&2; \
	  echo "VITQUANT_DATA to a folder holding train/ and test/ ImageFolder trees." >&2; \
	  exit 1; \
	fi

test: venv data
	$(VPY) -m pytest -q tests $(PYTEST_ARGS)

# Each notebook is executed into $(EXECUTED) (one folder per profile) and re-executed only when
# it, the library, its model's checkpoint or the pins changed since: `make book` after editing one
# notebook reruns that one (the ranking-aware ablation is over an hour on 2 CPU cores). A
# notebook that reads an earlier one's results depends on it below. papermill writes to a
# temporary file, so a failed run leaves no executed notebook behind (the .running file shows
# where it stopped). The notebooks run with the venv's own kernel: the native python3
# kernelspec runs the Python that launched papermill, i.e. $(VPY).
EXECUTED := build/executed/$(PROFILE)
EXECUTED_NOTEBOOKS := $(addprefix $(EXECUTED)/,$(notdir $(NOTEBOOKS)))
NOTEBOOK_INPUTS := $(shell find vitquant_core -name '*.py') requirements.txt
# A notebook depends on the checkpoint of the model its parameters cell names (`model = "..."`),
# so retraining ResNet-20 does not rerun the DeiT notebook; 00 shows every card and the
# data-copy probe's runs (checkpoints/data_copy_probe.json), so it depends on them all.
ALL_CHECKPOINTS := $(wildcard checkpoints/*.safetensors checkpoints/*.json checkpoints/*.jsonl)
notebook_model = $(shell sed -n 's/^ *"model = \\"\([A-Za-z0-9_.-]*\)\\".*/\1/p' notebooks/$(1).ipynb | head -n 1)
notebook_checkpoints = $(if $(filter 00_%,$(1)),$(ALL_CHECKPOINTS),$(filter checkpoints/$(call notebook_model,$(1)).%,$(ALL_CHECKPOINTS)))

.SECONDEXPANSION:
$(EXECUTED)/%.ipynb: notebooks/%.ipynb $(NOTEBOOK_INPUTS) $$(call notebook_checkpoints,$$*) | venv data
	mkdir -p $(EXECUTED) $(RESULTS)
	$(VENV)/bin/papermill $< $(EXECUTED)/$*.running.ipynb -k python3 --cwd notebooks \
	  -p profile "$(PROFILE)" -p results_dir "$(abspath $(RESULTS))" $(PAPERMILL_ARGS)
	mv $(EXECUTED)/$*.running.ipynb $@

# 02 compares with 01's float baseline (read from RESULTS)
$(EXECUTED)/02_ptq.ipynb: $(EXECUTED)/01_baseline.ipynb

book: venv data $(EXECUTED_NOTEBOOKS)
	@test -n "$(NOTEBOOKS)" || { echo "error: no notebooks/[0-9][0-9]_*.ipynb to run" >&2; exit 1; }
	rm -rf $(BOOK)/notebooks $(BOOK)/book
	mkdir -p $(BOOK)/notebooks
	cp $(EXECUTED_NOTEBOOKS) $(BOOK)/notebooks/
	cp _config.yml _toc.yml $(BOOK)/
	cp -r book $(BOOK)/book
	if [ -f references.bib ]; then cp references.bib $(BOOK)/; fi
	$(VENV)/bin/jupyter-book build $(BOOK) -W -n --keep-going
	@echo "The book: $(abspath $(BOOK))/_build/html/index.html"

book-quick:
	$(MAKE) book PROFILE=quick RESULTS=$(QUICK_RESULTS)

lab: venv
	$(VENV)/bin/jupyter lab

clean:
	rm -rf build results
