# Quick start:  make demo   (set up, then check a bundled example)
#               make test   (set up, then run the tests)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: setup demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to the local CPU build: any other requirement pulls GBs of CUDA packages
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/certify check case_studies/quickstart/digits_mlp.onnx specs/robustness_digits.yaml --timeout 30; \
	  code=$$?; echo "exit code $$code (0 holds, 1 violated, 3 unknown)"; test $$code -le 3

test: $(STAMP)
	bash scripts/install_browser.sh   # Debian chromium + chromedriver for the HTML report test
	$(BIN)/python -m pytest -n 2 --durations=15

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
