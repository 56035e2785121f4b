# cardbridge — `make demo` and `make test` are the two commands a newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench fleet load clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "installing cardbridge and its dependencies into $(VENV)…"
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: install
	@bash devtools/demo.sh

test: install
	@bash devtools/test.sh

lint: install
	@$(BIN)/ruff check .

bench: install
	@$(BIN)/python bench/page.py
	@$(BIN)/python bench/import.py
	@$(BIN)/python bench/email.py
	@$(BIN)/python bench/stripe_bulk.py

# The app as production runs it, on PostgreSQL and Redis at 127.0.0.1 (docs/deployment.md).
fleet: install
	@$(BIN)/python -m devtools.fleet

# Locust against a fleet it starts: 200 customers at once for a minute (bench/load.py).
load: install
	@$(BIN)/python -m bench.load

clean:
	rm -rf $(VENV) instance/cardbridge.db* instance/outbox
