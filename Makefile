# Two commands for a fresh machine: `make demo` and `make test`. Everything else is for developers.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint format protos bench bench-train bench-export bench-prepare clean

install: $(STAMP)

# torch first: on a machine without CUDA the CPU wheel (2.13.0 lies on local disk here) keeps pip from
# pulling a multi-GB CUDA build to satisfy the range in pyproject.toml.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		echo "no NVIDIA driver: installing the CPU build of torch"; \
		$(BIN)/python -m pip install -q torch==2.13.0; \
	fi
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/forgectl ignite examples/customer_support.csv \
		"Make a customer support bot for our online store" --model tiny

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The generated code is committed beside the .proto files; tests/test_protos.py fails when it is stale.
protos: install
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos \
		--grpc_python_out=protos protos/forge/v1/*.proto

bench: install
	$(BIN)/python bench/control_plane.py

# Training throughput against Trainer + PEFT on Alpaca (FORGE_REALDATA must point at ../shared/datasets or
# pass --data); on a GPU see the script's docstring for the Llama-3.2-1B shape.
bench-train: install
	FORGE_REALDATA=$${FORGE_REALDATA:-../shared/datasets} $(BIN)/python bench/train_throughput.py

bench-export: install
	$(BIN)/python bench/export.py

# Offline prepare of a generated 1M-row CSV: template script in the sandbox, validation, split.
bench-prepare: install
	$(BIN)/python bench/prepare.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
