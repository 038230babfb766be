# The README's two commands: `make run` and `make test`. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck bench postgres catalog clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/forum-habitant run

# A throwaway PostgreSQL server is started by the test run itself (tests/pgserver.py);
# this only makes sure Debian's server binaries are there.
postgres:
	@bash scripts/ensure-postgres.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check bot handlers storage moderation digests

typecheck: install
	$(VENV)/bin/mypy

test: install postgres
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	# Two workers, whole files each (a file's fakes and fixtures stay together): the suite is
	# mostly waiting on loopback sockets and databases, so two cores nearly halve it.
	$(PY) -m pytest -n 2 --dist loadfile

bench: install
	$(PY) -m bench

# Refresh the French catalog after adding texts: extract, then merge into fr.po.
catalog: install
	$(VENV)/bin/pybabel extract -F babel.cfg -k t -k tn:1,2 -k N_ --no-location \
		-o bot/locale/messages.pot bot handlers storage moderation digests
	$(VENV)/bin/pybabel update -i bot/locale/messages.pot -d bot/locale -l fr --no-fuzzy-matching

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
