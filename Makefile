.PHONY: run test lint images bench

run:
	bash scripts/run.sh

test:
	bash scripts/test.sh

lint:
	.venv/bin/ruff check .

images:
	.venv/bin/python manage.py build_images

bench:
	.venv/bin/python bench/latency.py
