# Two commands set up everything on a fresh machine:
#   make demo   several beat replicas on local Redis masters, each slot dispatched once
#   make test   lint, type check, the documentation build, the whole test suite and the
#               version matrix (make nox: Python 3.10/3.12/3.13 with the oldest, middle
#               and newest Celery, kombu, redis-py and Django)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# the matrix's Pythons: pyenv's, found by nox on PATH (set PYTHONS_PATH to use others)
PYTHONS_PATH ?= $(subst $(eval) ,:,$(wildcard $(HOME)/.pyenv/versions/3.1[0-3].*/bin))

.PHONY: demo demo-locks demo-django test lint typecheck docs nox nox-lanes pythons bench redis-server zookeeper etcd chromium promtool clean

$(STAMP): pyproject.toml
	@[ -n "$(PYTHON)" ] || { echo "error: no python3 found; install Python 3.10 or newer" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "error: $(PYTHON) is older than Python 3.10; set PYTHON=/path/to/python3.10+" >&2; exit 1; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV) || \
		{ echo "error: could not create $(VENV); install the venv module (Debian: apt-get install python3-venv)" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# django-celery-beat: the Django demo keeps part of its schedule in its tables
	$(BIN)/python -m pip install --quiet -e ".[dev,django,django-celery-beat]"
	@touch $@

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "redis-server is missing: installing it with apt-get"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
		else \
			echo "error: redis-server is missing. Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) and run again." >&2; \
			exit 1; \
		fi; }
	@command -v redis-server >/dev/null 2>&1 || { echo "error: redis-server is still missing after apt-get" >&2; exit 1; }

# the ZooKeeper store's tests start their own servers from Debian's package (and its java)
ZOOKEEPER_JAR ?= /usr/share/java/zookeeper.jar
zookeeper:
	@{ [ -f "$(ZOOKEEPER_JAR)" ] && command -v java >/dev/null 2>&1; } || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "zookeeper is missing: installing it with apt-get"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >/dev/null; \
		else \
			echo "error: ZooKeeper ($(ZOOKEEPER_JAR)) or java is missing. Install it (Debian/Ubuntu: sudo apt-get install zookeeper) or set ZOOKEEPER_JAR=/path/to/zookeeper.jar, and run again." >&2; \
			exit 1; \
		fi; }
	@[ -f "$(ZOOKEEPER_JAR)" ] || { echo "error: $(ZOOKEEPER_JAR) is still missing after apt-get" >&2; exit 1; }

# the etcd store's and lock's tests start their own members (Debian's etcd-server: etcd 3.4)
etcd:
	@command -v etcd >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "etcd is missing: installing etcd-server with apt-get"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; \
		else \
			echo "error: etcd is missing. Install it (Debian/Ubuntu: sudo apt-get install etcd-server; macOS: brew install etcd) and run again." >&2; \
			exit 1; \
		fi; }
	@command -v etcd >/dev/null 2>&1 || { echo "error: etcd is still missing after apt-get" >&2; exit 1; }

# the dashboard's browser test drives Debian's chromium (playwright downloads no browser)
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "chromium is missing: installing it with apt-get"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "error: chromium is missing. Install it (Debian/Ubuntu: sudo apt-get install chromium) or set CHROMIUM=/path/to/chrome, and run again." >&2; \
			exit 1; \
		fi; }

# the shipped alert rules are checked with promtool (tests/test_alert_rules.py), from
# Debian's prometheus package
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "promtool is missing: installing Debian's prometheus package with apt-get"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
		else \
			echo "error: promtool is missing. Install it (Debian/Ubuntu: sudo apt-get install prometheus; macOS: brew install prometheus) and run again." >&2; \
			exit 1; \
		fi; }
	@command -v promtool >/dev/null 2>&1 || { echo "error: promtool is still missing after apt-get" >&2; exit 1; }

demo: $(STAMP) redis-server
	$(BIN)/python examples/basic/demo.py

demo-django: $(STAMP) redis-server
	@redis-cli -p 6379 ping >/dev/null 2>&1 || { echo "error: no Redis answers on 127.0.0.1:6379; start one (redis-server --daemonize yes) and run again" >&2; exit 1; }
	$(BIN)/python examples/django_project/run_demo.py

demo-locks: $(STAMP) redis-server
	$(BIN)/python examples/lock_demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# the layers of docs/architecture.md: imports go down, never up ([tool.importlinter])
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy --strict celery_singleton_beat
	@# django-stubs types TextChoices over enum.StrEnum, which typeshed has from 3.11 on
	@# only: checked as 3.10, every choice would be a tuple. The app runs on 3.10 in the
	@# matrix's floors cell.
	$(BIN)/mypy --strict --python-version 3.11 django_app/django_celery_singleton_beat

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir $(VENV)/site

# The matrix's venvs are made while the suite runs (downloads and disk, little CPU), then
# its cells run on them once the suite has passed.
NOX_INSTALL_LOG := $(VENV)/nox-install.log
test: lint typecheck docs redis-server zookeeper etcd chromium promtool pythons
	@echo "== the version matrix's venvs, installed meanwhile (log: $(NOX_INSTALL_LOG))"
	@PATH="$(PYTHONS_PATH):$$PATH" $(BIN)/nox --no-color --install-only >$(NOX_INSTALL_LOG) 2>&1 & installing=$$!; \
	trap 'kill $$installing 2>/dev/null' INT TERM; \
	$(BIN)/pytest --durations=25 && \
	echo "== the Django app's records, admin and dashboard again, with PostgreSQL as the default database" && \
	$(BIN)/pytest -p no:cacheprovider --ds=tests.djangoapp.settings_postgres tests/djangoapp/test_admin_and_records.py; \
	passed=$$?; \
	wait $$installing || { cat $(NOX_INSTALL_LOG); echo "error: installing the version matrix's venvs failed (above)" >&2; exit 1; }; \
	exit $$passed
	$(MAKE) nox-lanes

# The cells on the venvs installed above, in two lanes at once (the floors cell, the
# heaviest, beside the middle and newest cells in turn); each lane's output once it ends.
NOX_LANES := floors middle,newest
nox-lanes: $(STAMP) redis-server zookeeper etcd pythons
	@echo "== the version matrix: $(NOX_LANES) (a lane each, at once)"
	@pids=""; for lane in $(NOX_LANES); do \
		PATH="$(PYTHONS_PATH):$$PATH" $(BIN)/nox --no-color --reuse-existing-virtualenvs --no-install \
			-s $$(echo $$lane | tr , ' ') >$(VENV)/nox-$$lane.log 2>&1 & pids="$$pids $$!"; done; \
	failed=0; for pid in $$pids; do wait $$pid || failed=1; done; \
	for lane in $(NOX_LANES); do echo "== nox: $$lane"; cat $(VENV)/nox-$$lane.log; done; \
	exit $$failed

# the matrix's Pythons, each found on PATH
pythons:
	@for v in 3.10 3.12 3.13; do PATH="$(PYTHONS_PATH):$$PATH" command -v python$$v >/dev/null || { \
		echo "error: python$$v not found (pyenv's are looked for in ~/.pyenv/versions); set PYTHONS_PATH=dir:dir" >&2; exit 1; }; done

# each cell: a fresh venv, the built wheel, pinned versions, the subset (see noxfile.py)
nox: $(STAMP) redis-server zookeeper etcd pythons
	PATH="$(PYTHONS_PATH):$$PATH" $(BIN)/nox --no-color $(NOX_ARGS)

bench: $(STAMP) redis-server zookeeper etcd
	$(BIN)/python bench/locks.py
	$(BIN)/python bench/scheduler.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
