# The agent as a container. Build: docker build -t jobs-agent .
# Run against real ends:
#   docker run -e JOBS_AGENT_THINGWORX__URL=wss://twx.example.com/Thingworx/WS \
#              -e JOBS_AGENT_THINGWORX__APP_KEY=... -e JOBS_AGENT_IOTHUB__CONNECTION_STRING=... jobs-agent
# or mount a configuration file at /app/config/agent.toml. With neither end configured the
# container runs the embedded demo (bundled IoT Hub emulator and ThingWorx stand-in), listening
# on all the container's interfaces (embedded.bind_host) while its URLs name 127.0.0.1:
#   docker run -p 8080:8080 -p 9102:9102 jobs-agent      then open http://127.0.0.1:8080
#
# Two stages: the slim image has no C compiler, so a build stage with gcc builds the project's
# wheel, which carries the optional C row reader (agent/alwayson/_rowreader.c, see
# docs/alwayson.md), and the image installs that wheel. The build fails if the wheel lacks the
# extension; the image's own build checks that the agent uses it.
FROM python:3.11-slim AS build

RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The project as the Makefile installs it (pip install of the project), without the dev extras.
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY services ./services
COPY wrappers ./wrappers
COPY emulator ./emulator
COPY rollouts ./rollouts
RUN pip install --upgrade pip && pip wheel --no-deps . -w /wheels \
    && python -c "import glob, sys, zipfile; names = zipfile.ZipFile(glob.glob('/wheels/*.whl')[0]).namelist(); sys.exit(0 if any(n.startswith('agent/alwayson/_rowreader.') and n.endswith('.so') for n in names) else 'the wheel lacks the C row reader')"

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    JOBS_AGENT_LOG__FORMAT=json \
    JOBS_AGENT_HEALTH__HOST=0.0.0.0 \
    JOBS_AGENT_EMBEDDED__BIND_HOST=0.0.0.0

RUN useradd --create-home --uid 10001 agent
WORKDIR /app

COPY --from=build /wheels /wheels
RUN pip install --upgrade pip && pip install /wheels/*.whl && rm -rf /wheels \
    && python -c "import sys, agent.alwayson as a; sys.exit(0 if a.ACCELERATED else 'no C row reader')"

COPY config ./config
RUN mkdir -p /app/data && chown -R agent:agent /app/data
USER agent

EXPOSE 9102 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9102/healthz', timeout=4).status == 200 else 1)"

CMD ["jobs-agent", "run"]
