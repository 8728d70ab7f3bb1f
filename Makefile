# vitquant: `make book` builds the Jupyter Book, `make test` runs the test suite. Both work
# from a fresh clone: they create the virtual environment and unpack the data first.
#
#   make book [RECOMPUTE=1] [STALE=mark]   the published book (full profile) from the committed
#       outputs in results/full; a notebook whose key (source, parameters, checkpoint, data,
#       pins) changed is re-executed, reading back every configuration already in
#       results/full/rows. RECOMPUTE=1 re-executes everything; STALE=mark shows a stale page
#       with a warning instead (CI)
#   make book-quick                        the same with the small quick profile (results/quick)
#   make test [PYTEST_ARGS="-k quant -x"]
#   make check-book                        the built book in headless Chromium (pages, images,
#       equations, console errors; screenshots in build/book/_build/html/_screenshots)
#   make data [SHARED=../shared]           unpack CIFAR-10 into .cache/data
#   make lab                               JupyterLab in the project's venv
#   make lint                              ruff
#   make clean                             remove build/ and results/quick

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
STALE ?= recompute
RECOMPUTE ?=
PYTEST_ARGS ?=
BOOK_ARGS := --profile $(PROFILE) --stale $(STALE) $(if $(RECOMPUTE),--recompute,)

.PHONY: help venv data browser test book book-quick check-book lint lab clean

help:
	@sed -n '1,/^$$/p' $(firstword $(MAKEFILE_LIST)) | sed 's/^# \{0,1\}//'

venv: $(STAMP)

# Re-run only when the pins or the package metadata change. pip leaves what already
# satisfies the pins alone, so an existing venv is not reinstalled. The venv is created
# only when missing: re-running `venv` over it could repoint it at another python3.
# requirements.txt pins what computes the results (it is part of every notebook's key);
# requirements-dev.txt pins the tools around them (ruff, Playwright for the browser check).
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -r requirements.txt -r requirements-dev.txt
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

# Debian's Chromium for the browser check and its tests (idempotent; apt only when missing)
browser: venv
	bash tools/install_browser.sh

test: venv data browser
	$(VPY) -m pytest -q tests $(PYTEST_ARGS)

# tools/build_book.py decides, notebook by notebook, whether the stored output is current
# (see its docstring), executes what is not, and runs jupyter-book with warnings as errors.
book: venv data
	$(VPY) tools/build_book.py $(BOOK_ARGS)

book-quick:
	$(MAKE) book PROFILE=quick

check-book: browser
	$(VPY) tools/check_book.py build/book/_build/html

lint: venv
	$(VENV)/bin/ruff check vitquant_core tests tools benchmarks

lab: venv
	$(VENV)/bin/jupyter lab

clean:
	rm -rf build results/quick
