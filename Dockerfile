# The agent as a container. Build: docker build -t jobs-agent .
# Run against real ends:
#   docker run -e JOBS_AGENT_THINGWORX__URL=wss://twx.example.com/Thingworx/WS \
#              -e JOBS_AGENT_THINGWORX__APP_KEY=... -e JOBS_AGENT_IOTHUB__CONNECTION_STRING=... jobs-agent
# or mount a configuration file at /app/config/agent.toml. With neither end configured the
# container runs the embedded demo (bundled IoT Hub emulator and ThingWorx stand-in), listening
# on all the container's interfaces (embedded.bind_host) while its URLs name 127.0.0.1:
#   docker run -p 8080:8080 -p 9102:9102 jobs-agent      then open http://127.0.0.1:8080
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    JOBS_AGENT_LOG__FORMAT=json \
    JOBS_AGENT_HEALTH__HOST=0.0.0.0 \
    JOBS_AGENT_EMBEDDED__BIND_HOST=0.0.0.0

RUN useradd --create-home --uid 10001 agent
WORKDIR /app

# Same install step as the Makefile's (pip install of the project), without the dev extras.
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY services ./services
COPY wrappers ./wrappers
COPY emulator ./emulator
RUN pip install --upgrade pip && pip install .

COPY config ./config
RUN mkdir -p /app/data && chown -R agent:agent /app/data
USER agent

EXPOSE 9102 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9102/healthz', timeout=4).status == 200 else 1)"

CMD ["jobs-agent", "run"]
