# Two commands on a fresh machine:  make run   |   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fedglobal-installed
EXPERIMENT ?= experiments/quickstart.toml
# Fashion-MNIST (Debian package, for the fashion_mnist_dirichlet and robustness benchmarks):
# installed when running as root with apt; otherwise a note says how.
FASHION_MNIST = test -d /usr/share/datasets/fashion-mnist || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get install -y -qq dataset-fashion-mnist || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null 2>&1 || \
	  echo "note: could not install dataset-fashion-mnist; the Fashion-MNIST benchmarks need it"; \
	else \
	  echo "note: the Fashion-MNIST benchmarks need: sudo apt-get install dataset-fashion-mnist"; \
	fi

.PHONY: run test test-engines test-speed lint format install clean chromium

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@$(FASHION_MNIST)
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/fedglobal simulate $(EXPERIMENT)

test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

# Subsets: the Ray/deployment suite (real SuperLink/SuperNode processes on
# loopback) and the speed-path suite (cohort training, worker pool, compression).
test-engines: $(STAMP)
	$(BIN)/python -m pytest -q tests/engines

test-speed: $(STAMP)
	$(BIN)/python -m pytest -q tests/speed

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf runs .pytest_cache .ruff_cache

# The HTML report test renders in headless Chromium (Debian package `chromium`).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Chromium for the report rendering test (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: Chromium is missing and this is not root: the report rendering test will skip"; \
	  fi; }
