# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing,
# installs the package with its dev extra, installs Debian's mariadb-server when mariadbd is missing and
# default-jdk-headless and maven when java or mvn is missing, and fetches the Apache Kafka broker's jars
# (dbus_ray/devstack/pom.xml) from Maven Central into ~/.cache/dbus-ray/kafka-<version>/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export RAY_AUTH_MODE ?= disabled

.PHONY: demo test unit bench chaos lint install mariadb java kafka clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed mariadb kafka

mariadb:
	@if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q mariadb-server; \
	fi

java:
	@if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q default-jdk-headless maven; \
	fi

kafka: $(VENV)/.installed java  # the broker of the dev stack, tests, demo and bench (a no-op once cached)
	@$(PY) -c 'from dbus_ray.devstack import kafka_libs as l, kafka_version as v; print(f"Kafka {v()} jars in {l()}")'

demo: install
	$(VENV)/bin/dbus demo

test: install lint  # lint first: CI fails on a ruff finding as on a failing test
	$(PY) -m pytest -q tests/unit tests/integration tests/chaos
	$(PY) -m pytest -q tests/cluster/test_cluster.py  # its own process: it starts a multi-node Ray cluster
	$(PY) -m pytest -q -s tests/cluster/test_kafka_cluster.py  # its own process: three Kafka brokers, own Ray; prints recovery times

unit: install  # the fast tests alone (no MariaDB, broker or Ray started): a few seconds
	$(PY) -m pytest -q tests/unit

bench: install
	$(PY) benchmarks/run.py

chaos: install  # the long chaos run: 5 rounds of 8 faults in each mode (at-least-once, exactly-once), with tables of recovery times and counts
	DBUS_CHAOS_ROUNDS=5 $(PY) -m pytest -q -s tests/chaos

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache bench-results.json
