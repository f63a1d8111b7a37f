# Two commands do everything on a fresh machine:
#   make demo   set up, then run the pipeline on params.yaml (offline default)
#   make test   set up, then run the whole test suite
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PLOTS_PAGE := .dvc/plots/offline.html
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup apt-lists browser demo test test-fast test-long bench help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(STAMP) $(PLOTS_PAGE) apt-lists  ## espeak-ng, apt lists (Asterisk prompts), virtual environment, torch (CPU) first, then the package; the offline plots page
# The audio stage fetches Debian's Asterisk prompt packages with `apt-get download` (whisper_npu/asterisk.py):
# it needs apt lists that know them. Checked on every setup (apt lists age independently of the venv).
apt-lists:
	@apt-cache show asterisk-core-sounds-en-wav=1.6.1-1 >/dev/null 2>&1 || $(SUDO) apt-get update -qq
$(STAMP): pyproject.toml constraints.txt
	@command -v espeak-ng >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq espeak-ng; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages.
	$(PY) -m pip install -q --no-compile torch==2.13.0
	$(PY) -m pip install -q --no-compile -c constraints.txt -e '.[dev]'
	# bytecode of everything installed, on every core (pip compiles one file at a time: 53 of its 120 s here).
	# Needed: with PYTHONDONTWRITEBYTECODE set, a module without it is compiled again by every process that imports
	# it. Like pip, skips what this Python cannot compile (torch's tests written for 3.12).
	$(PY) -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_paths()['purelib'], quiet=2, workers=0)"
	# Mobilint's loader, read by tests/test_mblt_folder.py but not installed (it needs transformers < 5.18)
	$(PY) -m pip download -q --no-deps -d $(VENV)/mblt-wheels transformers-mblt==0.6.1 mblt-npu-python==0.1.0
	@touch $@

# `dvc plots show/diff` pages with vega, vega-lite and vega-embed inlined (pinned npm packages, integrity checked)
$(PLOTS_PAGE): whisper_npu/vega_page.py | $(STAMP)
	$(PY) -m whisper_npu.vega_page --out $@

browser:  ## headless Chromium, which the plots tests open dvc's pages in
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

demo: setup  ## run the pipeline (dvc repro) on params.yaml, then print the per-language accuracy table
	dvc repro
	$(PY) -m whisper_npu.eval.report metrics/evaluate.json

test: setup browser  ## the whole test suite, slow end-to-end tests included (not the `long` ones)
	$(PY) -m pytest -m "not long" -n 2 --dist loadfile

test-long: setup  ## the runs over 20 minutes (the static INT8 accuracy floor on real English)
	$(PY) -m pytest -m long

test-fast: setup browser  ## unit tests only
	$(PY) -m pytest -m "not slow"

bench: setup  ## benchmark scripts (print tables; see BENCHMARKS.md)
	$(PY) -m bench.run_all
