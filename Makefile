# Two commands take a fresh machine from clone to running: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/crawlfleet
export CRAWLFLEET_CACHE_DIR := $(CACHE)

.PHONY: bootstrap run test unit chaos lint format kafka clean

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

## Lint, then the whole suite: tests/unit (no service) and tests/integration (real services) in
## $(TEST_WORKERS) processes at once, each with services of its own on free ports; then tests/chaos
## (real services killed, stopped and restarted mid-run) alone, so no other test's load skews its
## timing. A selection (PYTEST_ARGS="-k ...") that leaves one part empty is not an error.
TEST_WORKERS ?= 2
test: bootstrap kafka lint
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not chaos" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(PY) -m pytest tests/chaos -m chaos $(PYTEST_ARGS) || [ $$? -eq 5 ]

## The unit tests alone: no service is started, well under 30 s.
unit: bootstrap
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

## The chaos suite alone: nodes, replicas, PostgreSQL, Redis and Kafka killed mid-run (~4 min).
chaos: bootstrap kafka
	$(PY) -m pytest tests/chaos -m chaos $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
