# The README's commands. `make demo` sets everything up and runs the main job; `make test`
# sets up, lints, builds the docs strictly and runs the test suite (this is what .ci/run calls).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format docs docs-serve bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch/torchvision pinned to the builds served locally; any other release downloads GBs.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[dev,onnx,docs,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/sim2real demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# the documentation site: strict (a broken link or reference fails the build)
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# the suite and every docstring example (>>>) in the packages
test: lint docs
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --doctest-modules tests sim2real envs policies

bench: install
	$(BIN)/python benchmarks/render.py

clean:
	rm -rf runs site build .pytest_cache .ruff_cache
