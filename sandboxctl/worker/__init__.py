"""The worker side of the control plane: what runs in Celery worker processes (see apps.py)."""
