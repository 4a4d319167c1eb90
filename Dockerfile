# The agent as a container. Build with Docker (23+, BuildKit) or podman:
#   docker build -t jobs-agent .
#   podman build --format docker -t jobs-agent .     (podman's default OCI format drops HEALTHCHECK)
# Build arguments and secrets (docs/operations.md, "The container image (Docker or podman)"):
#   --build-arg PYTHON_IMAGE=registry.example.com/python:3.11-slim   another base: any image with
#       Python >= 3.11, its venv module and headers, and apt-get (Debian/Ubuntu) for the C compiler;
#   --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt      a CA bundle for pip behind a
#       TLS-intercepting proxy (mounted for pip's downloads only, never stored in the image).
# Run against real ends:
#   docker run -e JOBS_AGENT_THINGWORX__URL=wss://twx.example.com/Thingworx/WS \
#              -e JOBS_AGENT_THINGWORX__APP_KEY=... -e JOBS_AGENT_IOTHUB__CONNECTION_STRING=... jobs-agent
# or mount a configuration file at /app/config/agent.toml. With neither end configured the
# container runs the embedded demo (bundled IoT Hub emulator and ThingWorx stand-in), listening
# on all the container's interfaces (embedded.bind_host) while its URLs name 127.0.0.1:
#   docker run -p 8080:8080 -p 9102:9102 jobs-agent      then open http://127.0.0.1:8080
# The root filesystem may be read-only (--read-only): the agent writes only to /app/data.
#
# Two stages: the slim image has no C compiler, so a build stage with gcc builds the project's
# wheel, which carries the optional C row reader (agent/alwayson/_rowreader.c, see
# docs/alwayson.md), and the image installs that wheel. The build fails if the Python headers are
# missing (naming the package that has them) or the wheel lacks the extension; the image's own
# build checks that the agent uses it. Both stages install into a virtualenv, /opt/venv, so that
# a base with a distribution's Python (whose own site-packages pip may not touch) works too.
# The dependencies' wheels are built in a layer of their own, from pyproject.toml alone, so a
# change to the code rebuilds only the project's wheel.
ARG PYTHON_IMAGE=python:3.11-slim

# The build and run requirements, read from pyproject.toml into two files whose content changes
# only when they do: the dependency wheels built from them stay cached across other edits.
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /src/
RUN mkdir /requirements && python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb')); open('/requirements/build.txt', 'w').write('\n'.join(p['build-system']['requires'])); open('/requirements/deps.txt', 'w').write('\n'.join(p['project']['dependencies']))"

FROM ${PYTHON_IMAGE} AS build

RUN python3 -c "import os, sys, sysconfig; h = os.path.join(sysconfig.get_paths()['include'], 'Python.h'); sys.exit(0 if os.path.exists(h) else f'the Python headers ({h}) are missing, so the C row reader cannot be built: install python3-dev (Debian, Ubuntu; python3-devel on Fedora, RHEL) in the base image, or use a python:3.x image, which has them')"
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The build requirements into the venv, the dependencies as wheels (/deps); pip trusts the
# pip-cert secret's CA bundle when one is given.
COPY --from=requirements /requirements /requirements
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && pip install --upgrade pip && pip install -r /requirements/build.txt \
    && pip wheel -r /requirements/deps.txt -w /deps
# The project as the Makefile installs it (pip install of the project), without the dev extras.
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY services ./services
COPY wrappers ./wrappers
COPY emulator ./emulator
COPY iothub_query ./iothub_query
COPY logsetup ./logsetup
COPY rollouts ./rollouts
RUN pip wheel --no-deps --no-build-isolation . -w /wheels \
    && python -c "import glob, sys, zipfile; names = zipfile.ZipFile(glob.glob('/wheels/*.whl')[0]).namelist(); sys.exit(0 if any(n.startswith('agent/alwayson/_rowreader.') and n.endswith('.so') for n in names) else 'the wheel lacks the C row reader: agent/alwayson/_rowreader.c did not compile (see the compiler output above; it needs gcc and the Python headers, Debian package python3-dev)')"

FROM ${PYTHON_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JOBS_AGENT_LOG__FORMAT=json \
    JOBS_AGENT_HEALTH__HOST=0.0.0.0 \
    JOBS_AGENT_EMBEDDED__BIND_HOST=0.0.0.0

RUN useradd --create-home --uid 10001 agent && python3 -m venv /opt/venv
WORKDIR /app

# Installed from the build stage's wheels only (no index): the dependencies first, in a layer
# that stays cached while they are unchanged, then the project.
COPY --from=build /deps /deps
RUN pip install --no-index /deps/*.whl && rm -rf /deps
COPY --from=build /wheels /wheels
RUN pip install --no-index /wheels/*.whl && rm -rf /wheels \
    && python -c "import sys, agent.alwayson as a; sys.exit(0 if a.ACCELERATED else 'no C row reader')"

COPY config ./config
RUN mkdir -p /app/data && chown -R agent:agent /app/data
USER agent

EXPOSE 9102 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9102/healthz', timeout=4).status == 200 else 1)"

CMD ["jobs-agent", "run"]
