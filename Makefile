.PHONY: run test test-fast lint images bench

run:
	bash scripts/run.sh

test:
	bash scripts/test.sh

# Pure logic, serializers, state machine and API validation on SQLite: no root, Docker, Postgres or Redis.
test-fast:
	bash scripts/test_fast.sh

lint:
	bash scripts/venv.sh
	.venv/bin/ruff check .
	.venv/bin/lint-imports

images:
	.venv/bin/python manage.py build_images

bench:
	.venv/bin/python bench/latency.py
