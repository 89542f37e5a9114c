# The two commands: `make run` (local stack) and `make test` (lint + all tests).
.PHONY: run test lint typecheck unit integration install token notify bench fmt

UV ?= uv

install:
	scripts/bootstrap.sh

run: install
	scripts/run.sh

lint:
	$(UV) run ruff check .
	$(UV) run ruff format --check .

typecheck:
	$(UV) run mypy

test: lint typecheck
	$(UV) run pytest -q -p no:cacheprovider

unit:
	$(UV) run pytest -q tests/unit

integration:
	$(UV) run pytest -q tests/integration

fmt:
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

# make token USER=alice  -> a development JWT for the configured secret
token:
	@. scripts/env.sh && $(UV) run python -m shared.tokens "$(USER)"

# make notify MESSAGE="Maintenance at 22:00" LEVEL=warning
notify:
	@. scripts/env.sh && $(UV) run python -m shared.notify "$(MESSAGE)" --level "$(or $(LEVEL),info)"

bench:
	$(UV) run --group bench python -m bench
