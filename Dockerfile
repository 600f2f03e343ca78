# The control plane (web and worker). The worker talks to the host's dockerd, which must have runsc registered.
FROM python:3.11-slim
# debootstrap builds the sandbox root file systems on a worker host (manage.py build_images --no-docker).
RUN apt-get update && apt-get install -y --no-install-recommends debootstrap && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY sandboxctl sandboxctl
COPY providers providers
COPY executor executor
COPY templates templates
COPY conf conf
COPY manage.py ./
RUN pip install --no-cache-dir .
ENV SANDBOXCTL_DATA_DIR=/data PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["gunicorn", "sandboxctl.asgi", "-k", "sandboxctl.api.server.Worker", "--bind", "0.0.0.0:8000", "--workers", "2", \
     "--keep-alive", "75", "--no-control-socket"]
