# Two stages: build wheels with the toolchain, run on a slim image as a non-root user.
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
RUN apt-get update && apt-get install -y --no-install-recommends curl fonts-noto-mono && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/acar --create-home acar
COPY --from=build /wheels /wheels
COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir --no-index --find-links /wheels -c /tmp/constraints.txt acar && rm -rf /wheels
USER acar
WORKDIR /var/lib/acar
ENV ACAR_DATA_DIR=/var/lib/acar/data PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
ENTRYPOINT ["acar", "serve", "--host", "0.0.0.0", "--port", "8000"]
