# dreamsuite: `make demo` and `make test` do all set-up on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint protos check-protos bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/dreamsuite demo --out out

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

protos: install
	$(BIN)/python -m dreamsuite.protogen

check-protos: install
	$(BIN)/python -m dreamsuite.protogen --check

bench: install
	$(BIN)/dreamsuite bench engine

clean:
	rm -rf $(VENV) out build *.egg-info
