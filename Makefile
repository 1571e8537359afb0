# Two commands do all the set-up on a fresh machine with only Python 3.11:
#   make serve   # engine + embedded nats-server + SQLite log under ./data
#   make test    # the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The data folder: DATA=..., else SYNVOICE_DATA, else ./data.
DATA ?= $(or $(SYNVOICE_DATA),./data)

NODE_DIR := tests/node

.PHONY: serve test lint bench demo clean node-deps chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

serve: $(VENV)/.installed
	$(BIN)/synvoice serve --data $(DATA)

# The JavaScript device and integration of tests/node (npm ci from the lock file).
# Without npm the Node tests skip (and fail under CI=true, where Node is expected).
node-deps: $(NODE_DIR)/node_modules/.installed

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else \
		echo "npm not found: the Node client tests (tests/node) will not run"; \
	fi

test: $(VENV)/.installed node-deps chromium
	$(BIN)/python -m pytest -q

# The console's browser tests drive Debian's chromium through Playwright
# (executable_path; never `playwright install`, which downloads a browser).
chromium:
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

lint: $(VENV)/.installed
	$(BIN)/ruff check engine devices projections tests
	$(BIN)/ruff format --check engine devices projections tests
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(VENV)/.installed
	$(BIN)/python -m tests.bench

demo: $(VENV)/.installed
	$(BIN)/synvoice demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(NODE_DIR)/node_modules
