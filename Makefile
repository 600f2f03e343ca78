.PHONY: run worker test test-fast lint images bench

run:
	bash scripts/run.sh

# One more sandbox worker host for a deployment: needs DATABASE_URL and CELERY_BROKER_URL (see README).
worker:
	bash scripts/worker.sh

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
