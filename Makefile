# Two commands do all set-up on a fresh machine (see README.md):
#   make run    the series end to end on the offline default data
#   make test   the test suite
# Both create the virtual environment .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BUDGET ?= quick
SOURCE ?= auto
DOWNLOAD ?= no

.PHONY: run test test-slow lint notebooks check-notebooks images bench browser-test lab clean help

help:
	@echo "make run          run the series end to end (quick budget, offline default data;"
	@echo "                  BUDGET=tiny|quick|colab|full SOURCE=auto|svhn|synthetic DOWNLOAD=yes|no)"
	@echo "make test         run the tests (tiny budget, CPU)"
	@echo "make test-slow    run the slow tests (quick budget notebooks)"
	@echo "make notebooks    regenerate notebooks/ and solutions/ from nbsource/"
	@echo "make images       regenerate the figures in images/"
	@echo "make bench        run the benchmarks (by hand; prints and writes benchmarks/results/)"
	@echo "make browser-test run a learner notebook in JupyterLab in headless Chromium"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23.1"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) scripts/run_series.py --budget $(BUDGET) --source $(SOURCE) \
		$(if $(filter yes 1 true,$(DOWNLOAD)),--download,--no-download)

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not browser"

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

lint: $(STAMP)
	$(PY) -m ruff check nbhelpers tests scripts benchmarks

notebooks: $(STAMP)
	$(PY) scripts/build_notebooks.py

check-notebooks: $(STAMP)
	$(PY) scripts/build_notebooks.py --check

images: $(STAMP)
	$(PY) scripts/make_images.py

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser-test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || [ -n "$$CHROMIUM_PATH" ] || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)
	$(PY) -m pip install --quiet playwright
	NBHELPERS_REQUIRE_BROWSER=1 $(PY) -m pytest -m browser tests/test_browser.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf build runs .pytest_cache
