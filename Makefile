# rtcontrol: `make run` opens the console on a simulated scan; `make test` runs every test.
# Both create .venv on first use and install the project into it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run demo test bench screenshot bundle bundle-check clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bundle]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

run: $(STAMP)
	$(PY) main.py

demo: $(STAMP)
	$(PY) main.py --demo

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

bench: $(STAMP)
	$(PY) main.py bench

screenshot: $(STAMP)
	$(PY) -m tools.screenshot

bundle: $(STAMP)
	$(VENV)/bin/pyinstaller --noconfirm --clean rtcontrol.spec

bundle-check: bundle
	$(PY) -m tools.bundle_check dist/rtcontrol

clean:
	rm -rf build dist .pytest_cache
