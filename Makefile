# make run   — set up the virtualenv and start the proxy with config/schoolproxy.yaml
# make test  — set up and run the whole test suite
# make check — validate the example config and run its policy tests
# make eval  — recall and false alerts of the safeguarding phrase lists on tests/data/, and their cost
# make bench — throughput and latency; make soak — a few minutes of hostile load (not part of make test)
SHELL := /bin/bash
VENV   := .venv
PY     := $(VENV)/bin/python
CONFIG ?= config/schoolproxy.yaml

# Find a Python >= 3.12: an explicit PYTHON=..., then python3.13/python3.12 (pyenv shims honour
# .python-version), then python3 if it is new enough.
PYTHON ?= $(shell for p in python3.13 python3.12 python3; do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3,12))' 2>/dev/null; \
	  then command -v $$p; break; fi; done)

# make install — install or upgrade on this gateway (root): /opt/schoolproxy, /etc/schoolproxy,
#                /var/lib/schoolproxy, systemd units (docs/install.md). DESTDIR=... installs into another tree.
PREFIX  := /opt/schoolproxy
DESTDIR ?=
APP     := $(DESTDIR)$(PREFIX)/venv

.PHONY: run test check bench soak eval clean venv install

venv: $(VENV)/.installed

# Git cannot store a file's mode: the demo users file (password hashes) is made private here.
$(VENV)/.installed: pyproject.toml
	@if [ -z "$(PYTHON)" ]; then \
	  echo "schoolproxy needs Python 3.12 or newer (mitmproxy 12 requires it)."; \
	  echo "Install it, e.g. 'apt-get install python3.12 python3.12-venv' or 'pyenv install 3.12',"; \
	  echo "or run: make PYTHON=/path/to/python3.12 ..."; exit 1; fi
	@echo "Using $(PYTHON) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@chmod 600 config/users.htpasswd
	@touch $@

run: venv
	@chmod 600 config/users.htpasswd
	$(VENV)/bin/schoolproxy run --config $(CONFIG)

check: venv
	$(VENV)/bin/schoolproxy check --config $(CONFIG)

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: venv
	@command -v wrk >/dev/null && command -v curl >/dev/null || { echo "make bench needs wrk and curl (apt-get install wrk curl)"; exit 2; }
	$(PY) bench/detection.py
	$(PY) bench/run.py

eval: venv
	$(PY) -m schoolproxy.monitoring.evaluation --config $(CONFIG)
	$(PY) bench/detection.py

# A few minutes of hostile load (slow clients, big bodies, guessing) beside real users: memory and failures.
soak: venv
	$(PY) bench/soak.py

clean:
	rm -rf $(VENV) var/ .pytest_cache

install:
	@if [ "$$(id -u)" != 0 ]; then echo "make install needs root: sudo make install"; exit 1; fi
	@if [ -z "$(PYTHON)" ]; then \
	  echo "schoolproxy needs Python 3.12 or newer, outside /root and /home (the service user runs it)."; \
	  echo "Debian 13: apt-get install python3 python3-venv. Debian 12: see docs/install.md, then"; \
	  echo "  sudo make install PYTHON=/opt/python/.../bin/python3.12"; exit 1; fi
	@echo "Using $(PYTHON) ($$($(PYTHON) --version))"
	@# A virtualenv of an older or removed Python is made afresh; the config and state are elsewhere.
	@if [ -e $(APP) ] && ! $(APP)/bin/python -c 'import sys; sys.exit(sys.version_info < (3,12))' 2>/dev/null; \
	  then rm -rf $(APP); fi
	@[ -x $(APP)/bin/python ] || $(PYTHON) -m venv $(APP)
	@# setuptools builds in build/: a stale copy there would install files this checkout no longer has.
	rm -rf build
	$(APP)/bin/python -m pip install -q --upgrade .
	$(APP)/bin/schoolproxy install --root "$(if $(DESTDIR),$(DESTDIR),/)" --from "$(CURDIR)"
