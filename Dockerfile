# syntax=docker/dockerfile:1
# Multi-stage: build the virtualenv (with the French spaCy pipeline) in one stage, run it as a
# non-root user in a slim one.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/forum
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
COPY moderation ./moderation
COPY digests ./digests
RUN /opt/forum/bin/pip install --upgrade pip && /opt/forum/bin/pip install .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/forum/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DATABASE_URL=sqlite:////var/lib/forum/forum.db
RUN useradd --system --home-dir /var/lib/forum --create-home --uid 10001 forum
COPY --from=build /opt/forum /opt/forum
USER forum
WORKDIR /var/lib/forum
VOLUME ["/var/lib/forum"]
# Healthy when the settings are valid and the database answers.
HEALTHCHECK --interval=60s --timeout=10s --start-period=30s --retries=3 \
    CMD ["forum-habitant", "health"]
ENTRYPOINT ["forum-habitant"]
CMD ["run"]
