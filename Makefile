# Two commands take a fresh machine from clone to running: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/crawlfleet
export CRAWLFLEET_CACHE_DIR := $(CACHE)

.PHONY: bootstrap run test unit lint format kafka clean

$(VENV)/.installed: pyproject.toml
	bash deploy/dev/bootstrap.sh "$(VENV)"
	touch $@

bootstrap: $(VENV)/.installed

kafka: bootstrap
	bash deploy/kafka/fetch.sh "$(CACHE)/kafka"

## The main job: the whole platform on this machine.
run: bootstrap
	$(VENV)/bin/crawlfleet up

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: bootstrap
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Lint, then the whole suite: tests/unit (no service) and tests/integration (real services).
test: bootstrap kafka lint
	$(PY) -m pytest $(PYTEST_ARGS)

## The unit tests alone: no service is started, well under 30 s.
unit: bootstrap
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
