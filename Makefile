PY ?= python3

.PHONY: test lint fix typecheck bench

test:
	$(PY) -m pytest

lint:
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench
	$(PY) -m mypy

fix:
	$(PY) -m ruff check --fix src tests bench
	$(PY) -m ruff format src tests bench

bench:
	$(PY) bench/proxy_bench.py
