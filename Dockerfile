# Two stages: build wheels with the toolchain, run on a slim image as a non-root user (no compiler, no pip cache,
# no wheels left in the final image). Build: `make image`. tests/functional/test_container_entrypoint.py builds the
# wheel from the files this stage copies, installs it into a clean virtual environment and runs ENTRYPOINT + CMD
# below on an empty data directory, so the image's steps are tested where no container builder runs.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY api ./api
COPY idp ./idp
COPY signing ./signing
COPY keys ./keys
COPY storage ./storage
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt .

FROM python:3.11-slim-bookworm
# fonts-noto-mono: the visible signature appearance's embedded font (PDF/A needs every font embedded)
RUN apt-get update && apt-get install -y --no-install-recommends fonts-noto-mono && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/acar --create-home acar \
    && install -d -o acar -g acar -m 0700 /var/lib/acar/data
COPY --from=build /wheels /wheels
COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir --no-index --find-links /wheels -c /tmp/constraints.txt acar \
    && rm -rf /wheels /tmp/constraints.txt
USER acar
WORKDIR /var/lib/acar
# The data directory: in development the SQLite database, the generated master key and the development CA live
# here; in production (PostgreSQL, the master key as a secret file) it holds nothing that must be kept.
ENV ACAR_DATA_DIR=/var/lib/acar/data PYTHONUNBUFFERED=1
VOLUME ["/var/lib/acar/data"]
EXPOSE 8000
# Ready, not merely alive: the database answers, the schema is at head, the token keys are loaded (api/routes/health.py).
# A worker container (CMD ["worker"]) serves no HTTP: give it `healthcheck: {disable: true}` (README, Container).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]
# `acar start` migrates (one replica at a time), prepares an empty data dir in development (`acar init`) or refuses
# in one line what production lacks (master key, database, CA), then runs `acar serve` or `acar worker` with the
# arguments that follow: CMD ["worker"] (compose: `command: ["worker"]`) runs a signing worker from this image.
ENTRYPOINT ["acar", "start"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
