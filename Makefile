# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo lint test test-fast bench screenshots clean

# Re-install when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[examples,lab,test,dev,postgres,dask]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nbsched run sample_notebooks/pipeline.yaml -p n_rows=5000 --report
	$(BIN)/nbsched run sample_notebooks/forecast.yaml --report

# ruff (lint and format), mypy, and the layers of ../shared/DESIGN.md as import-linter contracts
lint: $(STAMP)
	$(BIN)/ruff check nbsched jupyter_ext tests benchmarks
	$(BIN)/ruff format --check nbsched jupyter_ext tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The lint, then the tests two at once (most wait on kernels, processes and databases more than
# they compute), then the few that load the whole machine or are timed against it, alone.
test: lint
	$(BIN)/python -m pytest -n 2 --dist worksteal -m "not serial"
	$(BIN)/python -m pytest -m serial

# The inner loop: every test that starts no kernel (and no browser), in well under a minute.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not kernel and not slow and not serial and not browser"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_scheduler.py
	$(BIN)/python benchmarks/bench_history.py

# The README's pictures, made by the browser test.
screenshots: $(STAMP)
	$(BIN)/python -m pytest tests/test_browser.py
	mkdir -p docs
	cp tests/artifacts/panel.png tests/artifacts/panel-running.png tests/artifacts/report.png docs/

clean:
	rm -rf $(VENV) .nbsched nbsched-runs tests/artifacts .pytest_cache benchmarks/.work benchmarks/.work-scheduler benchmarks/.work-history
