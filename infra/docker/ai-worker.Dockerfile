# syntax=docker/dockerfile:1
# The AI worker image, built from the repository root:
#   docker build -f infra/docker/ai-worker.Dockerfile -t traffic-dam/ai-worker .
# Stage 1 builds a virtualenv with the pinned runtime requirements; stage 2 copies only that
# venv and the package, and runs as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY apps/ai-worker/requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WORKER_HOST=0.0.0.0 \
    WORKER_PORT=8090
RUN useradd --system --uid 10001 --no-create-home worker
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY apps/ai-worker/ai_worker ./ai_worker
USER worker
EXPOSE 8090
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os,sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('WORKER_PORT','8090'), timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "ai_worker"]
