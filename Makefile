# cloudmirror: every tool the demo and the tests need is installed from here.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
            command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint venv localstack-venv bench bench-tools browser clean

demo: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/cloudmirror demo

test: $(STAMP) $(NODE_STAMP) localstack-venv browser lint
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider --durations=25 $(PYTEST_ARGS)

test-fast: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/python -m pytest -q -m "not localstack" $(PYTEST_ARGS)

venv: $(STAMP) $(NODE_STAMP)

# ruff (pyflakes, pycodestyle, isort, bugbear; configured in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Azurite (the Azure Blob/Queue emulator) from the npm registry, pinned by package-lock.json
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python >= 3.11 is required" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

localstack-venv:
	localstack/launch venv

bench: $(STAMP) $(NODE_STAMP) bench-tools
	$(VENV)/bin/python -m bench.run

# rclone, the peer of the cross-provider benchmark rows, from Debian when missing
bench-tools:
	@command -v rclone >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y rclone || { $$SUDO apt-get update && $$SUDO apt-get install -y rclone; }; }

# Chromium, the browser of the dashboard test (tests/e2e), from Debian when missing
browser:
	@test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y chromium || { $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }; }

clean:
	rm -rf $(VENV) .localstack-venv .cloudmirror node_modules
