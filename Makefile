# rtcontrol: `make run` opens the console on a simulated scan; `make test` runs every test.
# Both create .venv on first use and install the project into it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run demo test faults soak bench screenshot bundle bundle-check clean

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
	$(VENV)/bin/ruff check
	$(VENV)/bin/mypy
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

# The fault-injection suite alone (real worker, subject agent and console processes; also part of `make test`).
faults: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest tests/faults -v -s

# The longer soak: five rounds of 150 volumes with 30 random link cuts each (a new seed per round, printed).
soak: $(STAMP)
	for round in 1 2 3 4 5; do \
		RTCONTROL_FAULT_SOAK=1 QT_QPA_PLATFORM=offscreen $(PY) -m pytest tests/faults/test_links.py -x -s -k random || exit 1; \
	done

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
