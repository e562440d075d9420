# Offboard: one image for the web process, the workers and the migrations.
#   docker build -t offboard .
#   docker run --env-file offboard.env offboard                   # web (no worker thread)
#   docker run --env-file offboard.env offboard offboard worker   # a worker
FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY connector ./connector
COPY adapters ./adapters
RUN python -m venv /opt/offboard \
 && /opt/offboard/bin/pip install --upgrade pip \
 && /opt/offboard/bin/pip install .

FROM python:3.12-slim
RUN groupadd --system offboard \
 && useradd --system --gid offboard --home-dir /app --no-create-home --shell /usr/sbin/nologin offboard
COPY --from=build /opt/offboard /opt/offboard
WORKDIR /app
# The bundled playbooks, read-only; mount a deployment's own over /app/playbooks.
COPY playbooks ./playbooks
# var/ is where the default SQLite database lives, for a single container without Postgres.
RUN mkdir -p /app/var && chown offboard:offboard /app/var
ENV PATH=/opt/offboard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OFFBOARD_PLAYBOOKS=/app/playbooks
USER offboard
EXPOSE 8080
# SIGTERM: the web process answers what it has read, workers finish the action in hand.
STOPSIGNAL SIGTERM
CMD ["offboard", "serve", "--host", "0.0.0.0", "--port", "8080", "--no-worker"]
