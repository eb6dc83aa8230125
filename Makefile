# dreamsuite: `make demo` and `make test` do all set-up on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# buf (proto lint and breaking-change checks), from npm, installed into an ignored folder.
BUF_VERSION  := 1.75.0
BUF_DIR      := .tools/buf
BUF          := $(BUF_DIR)/node_modules/.bin/buf
BUF_STAMP    := $(BUF_DIR)/.installed-$(BUF_VERSION)
BUF_BASELINE := protos/buf-baseline.binpb

# System packages pip cannot install (scripts/system-deps: installed with apt-get as root,
# otherwise a one-line message and a stop). The package needs java (TorchServe); the tests
# also need prometheus/promtool and node/npm (buf). Target-specific values are inherited by
# the prerequisites, so `make test` checks all of them once, before pip runs.
SYSTEM_DEPS := java
test: SYSTEM_DEPS := java prometheus node
proto-lint proto-baseline: SYSTEM_DEPS := node

.PHONY: install demo test lint protos check-protos proto-lint proto-baseline bench clean system-deps

system-deps:
	@scripts/system-deps $(SYSTEM_DEPS)

$(STAMP): pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(BUF_STAMP): | system-deps
	rm -rf $(BUF_DIR)
	npm install --prefix $(BUF_DIR) --no-save --no-package-lock --no-audit --no-fund \
		@bufbuild/buf@$(BUF_VERSION)
	touch $@

demo: install
	$(BIN)/dreamsuite demo --out out

test: install $(BUF_STAMP)
	$(BIN)/python -m dreamsuite.protogen --check
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BUF) lint
	$(BUF) breaking protos --against $(BUF_BASELINE)
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

protos: install
	$(BIN)/python -m dreamsuite.protogen

check-protos: install
	$(BIN)/python -m dreamsuite.protogen --check

# The proto checks of `make test` alone.
proto-lint: $(BUF_STAMP)
	$(BUF) lint
	$(BUF) breaking protos --against $(BUF_BASELINE)

# Deliberately accept the current protos as the new compatibility baseline (commit the file).
proto-baseline: $(BUF_STAMP)
	$(BUF) build --exclude-source-info -o $(BUF_BASELINE)

bench: install
	$(BIN)/dreamsuite bench engine

clean:
	rm -rf $(VENV) out build *.egg-info .tools
