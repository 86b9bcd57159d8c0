# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing,
# installs the package with its dev extra, installs Debian's mariadb-server when mariadbd is missing, postgresql
# when initdb is missing, redis-server (GCS fault tolerance tests) when it is missing, and
# default-jdk-headless and maven when java or mvn is missing, and fetches the Apache Kafka broker's jars
# (dbus_ray/devstack/pom.xml) from Maven Central into ~/.cache/dbus-ray/kafka-<version>/, and builds the schema
# registry of the Avro tests (Apicurio Registry, dbus_ray/devstack/registry/pom.xml) into
# ~/.cache/dbus-ray/apicurio-registry-<version>/ (about a minute, once).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export RAY_AUTH_MODE ?= disabled

.PHONY: demo test unit bench bench-peer bench-profile chaos lint install mariadb postgres redis java kafka registry clean peer-deps peer

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed mariadb postgres redis kafka registry

mariadb:
	@if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q mariadb-server; \
	fi

postgres:  # the postgres sink's tests start a private PostgreSQL (initdb + postgres; Debian: /usr/lib/postgresql/<ver>/bin)
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q postgresql; \
	fi

redis:  # tests/cluster/test_gcs_ft.py keeps Ray's GCS in a private redis-server (GCS fault tolerance)
	@if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q redis-server; \
	fi

java:
	@if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q default-jdk-headless maven; \
	fi

kafka: $(VENV)/.installed java  # the broker of the dev stack, tests, demo and bench (a no-op once cached)
	@$(PY) -c 'from dbus_ray.devstack import kafka_libs as l, kafka_version as v; print(f"Kafka {v()} jars in {l()}")'

registry: $(VENV)/.installed java  # the Avro serializer's real schema registry (a no-op once built)
	@$(PY) -c 'from dbus_ray.devstack.registry import registry_app as a, registry_version as v; print(f"Apicurio Registry {v()} in {a()}")'

demo: install
	$(VENV)/bin/dbus demo

test: install lint peer-deps  # lint first: CI fails on a ruff finding as on a failing test
	$(PY) -m pytest -q tests/unit tests/integration tests/chaos
	$(PY) -m pytest -q tests/cluster/test_cluster.py  # its own process: it starts a multi-node Ray cluster
	$(PY) -m pytest -q tests/cluster/test_shared_cluster.py  # its own process: shared hosts packed per node of a multi-node Ray
	$(PY) -m pytest -q -s tests/cluster/test_head_loss.py  # its own process: loses and rebuilds a whole cluster; prints recovery times
	$(PY) -m pytest -q -s tests/cluster/test_gcs_ft.py  # its own process: GCS on a private Redis, kill -9 of gcs_server, then of the head node; prints recovery times
	$(PY) -m pytest -q tests/cluster/test_secrets_at_rest.py  # its own process: GCS on a private Redis, searched for a submitted value
	$(PY) -m pytest -q -s tests/cluster/test_kafka_cluster.py  # its own process: three Kafka brokers, own Ray; prints recovery times
	DBUS_DEBEZIUM_JARS=$(DEBEZIUM_JARS) $(PY) -m pytest -q tests/peer  # format debezium vs Debezium itself (~1 min)

unit: install  # the fast tests alone (no MariaDB, broker or Ray started): a few seconds
	$(PY) -m pytest -q tests/unit

bench: install peer-deps  # includes Debezium on the same work (benchmarks/peer.py); DBUS_BENCH_PEER=0 leaves it out
	DBUS_DEBEZIUM_JARS=$(DEBEZIUM_JARS) $(PY) benchmarks/run.py

bench-peer: install peer-deps  # only the Debezium comparison of `make bench`, merged into bench-results.json
	DBUS_DEBEZIUM_JARS=$(DEBEZIUM_JARS) $(PY) benchmarks/peer.py

bench-profile: install  # where a MariaDB -> Kafka catch-up's time goes, actor by actor (py-spy; cProfile without it)
	$(PY) benchmarks/bench_profile.py
	$(PY) benchmarks/bench_profile.py --one-row

chaos: install  # the long chaos run: 5 rounds of 10 faults in each mode (at-least-once, exactly-once), and 5 rounds of the live-copy faults per sink (postgres, delta), with tables of recovery times and counts
	DBUS_CHAOS_ROUNDS=5 $(PY) -m pytest -q -s tests/chaos

# Debezium side by side (tests/peer): a JDK and Maven from Debian when missing, then Debezium's jars from Maven
# Central (java/debezium/pom.xml) into DEBEZIUM_JARS.
DEBEZIUM_JARS ?= $(HOME)/.cache/dbus-ray/debezium-3.5.0

peer-deps: java
	@if ! ls $(DEBEZIUM_JARS)/debezium-connector-mariadb-*.jar >/dev/null 2>&1; then \
		mkdir -p $(DEBEZIUM_JARS) && \
		mvn -q -B -f java/debezium/pom.xml dependency:copy-dependencies -DoutputDirectory=$(DEBEZIUM_JARS); \
	fi

peer: install peer-deps  # format: debezium compared with Debezium itself, message by message
	DBUS_DEBEZIUM_JARS=$(DEBEZIUM_JARS) $(PY) -m pytest -q tests/peer

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache bench-results.json
