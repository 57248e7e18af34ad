# pretrade: `make run` installs and starts the stack; `make test` installs and runs the tests.
# Everything a fresh machine needs is installed here, into .venv (pip's cache is kept).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export PYKX_UNLICENSED := true
export PYKX_SUPPRESS_WARNINGS := true

.PHONY: install run test bench lint schema lock clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
		|| echo "chromium could not be installed: the dashboard's browser test will skip"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,ml,fix]'
	touch $(STAMP)

run: install
	$(BIN)/pretrade up

test: install
	$(BIN)/pytest

bench: install
	for b in scripts/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: install
	$(BIN)/ruff check py tests scripts

schema: install
	$(BIN)/pretrade schema --q

lock: install
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^pretrade'; } > constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) var build *.egg-info
