"""The agent's one settings object.

Rules:
- Values come, lowest priority first, from the defaults here, the TOML file (``config/agent.toml``
  or the file named by ``JOBS_AGENT_CONFIG``), and environment variables named
  ``JOBS_AGENT_<SECTION>__<KEY>`` (e.g. ``JOBS_AGENT_THINGWORX__URL``).
- Secrets (the ThingWorx app key, the IoT Hub connection string) are ``SecretStr``: they never
  appear in a repr, a log line or an error message. Each can also be read from a file
  (``*_file`` keys), which is how container secrets are mounted.
- Every timeout the agent uses is a setting here; code never spreads timeout literals around.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "AuditSettings",
    "EmbeddedSettings",
    "HealthSettings",
    "IotHubSettings",
    "JobSettings",
    "LogSettings",
    "RolloutSettings",
    "Settings",
    "StoreSettings",
    "ThingWorxSettings",
    "default_config_path",
    "load_settings",
    "settings_errors",
]

CONFIG_ENV = "JOBS_AGENT_CONFIG"
ENV_PREFIX = "JOBS_AGENT_"


def default_config_path() -> Path:
    """``$JOBS_AGENT_CONFIG`` if set, else ``config/agent.toml`` under the working directory."""
    return Path(os.environ.get(CONFIG_ENV, "config/agent.toml"))


class _Section(BaseModel):
    """A settings section: unknown keys are an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


def _read_secret_file(path: str) -> SecretStr:
    return SecretStr(Path(path).read_text(encoding="utf-8").strip())


class ThingWorxSettings(_Section):
    """The AlwaysOn connection to ThingWorx (reference/alwayson.md §1.5 for the defaults)."""

    url: str = Field("", description="wss://host/Thingworx/WS; empty = the embedded stand-in")
    app_key: SecretStr = Field(SecretStr(""), description="ThingWorx application key")
    app_key_file: str = Field("", description="file holding the app key (overrides app_key)")
    ca_file: str = Field("", description="CA bundle to trust for wss:// (default: system)")
    verify_tls: bool = Field(True, description="verify the server certificate for wss://")
    gateway_thing: str = Field("AzureIotHub", description="name of the gateway Thing")
    auto_bind: list[str] = Field(
        default_factory=list, description="device Things to bind (IoT Hub device ids)"
    )
    chunk_size: int = Field(8192, ge=512, le=65535, description="AlwaysOn message chunk size")
    max_message_size: int = Field(1_048_576, ge=8192, description="largest reassembled message")
    connect_timeout: float = Field(10.0, gt=0, description="websocket handshake timeout, s")
    auth_timeout: float = Field(10.0, gt=0, description="AUTH/BIND answer timeout, s")
    request_timeout: float = Field(
        30.0,
        gt=0,
        description="the platform's wait for an answer to a remote-service call (ThingWorx "
        "WSCommunicationsSubsystem, default 30 s); direct calls must fit in it, s",
    )
    standby_retry: float = Field(
        5.0,
        gt=0,
        description="while another agent holds the Things (BIND refused, first-in-wins), seconds "
        "between two attempts to take over",
    )
    ping_interval: float = Field(55.0, gt=0, description="websocket ping period, s")
    pong_timeout: float = Field(10.0, gt=0, description="drop the link after this, s")
    reconnect_initial_delay: float = Field(1.0, gt=0, description="first backoff delay, s")
    reconnect_max_delay: float = Field(60.0, gt=0, description="backoff ceiling, s")
    stale_multipart_after: float = Field(50.0, gt=0, description="drop incomplete sets, s")
    drain_timeout: float = Field(
        10.0, ge=0, description="on stop, time the calls in flight get to finish and answer, s"
    )
    push_queue_size: int = Field(
        1000, ge=1, description="pushes kept while the link is down (oldest dropped first)"
    )
    multipart_pending_bytes: int = Field(
        4 * 1_048_576,
        ge=8192,
        description="bytes of incomplete multipart sets the server may make the agent hold",
    )

    @model_validator(mode="after")
    def _secret_from_file(self) -> ThingWorxSettings:
        if self.app_key_file:
            self.app_key = _read_secret_file(self.app_key_file)
        return self

    @model_validator(mode="after")
    def _pending_fits_a_message(self) -> ThingWorxSettings:
        if self.multipart_pending_bytes < self.max_message_size:
            raise ValueError(
                f"multipart_pending_bytes ({self.multipart_pending_bytes}) must be at least "
                f"max_message_size ({self.max_message_size}), or a big answer could never complete"
            )
        return self


class IotHubSettings(_Section):
    """The IoT Hub service connection (through the azure-iot-hub SDK).

    Calls run in two lanes that never share a queue (:mod:`agent.iothub.lanes`): the hub lane
    (``workers`` threads, ``hub_queue`` more calls may wait) for the quick calls, and the device
    lane (``device_calls`` threads, no queue) for direct methods, which wait on devices. A call
    that finds its lane full is refused at once. ``max_rows_per_call`` and ``max_bytes_per_call``
    bound what one call may read from the hub, checked page by page.
    """

    connection_string: SecretStr = Field(
        SecretStr(""), description="service connection string; empty = the embedded emulator"
    )
    connection_string_file: str = Field("", description="file holding the connection string")
    ca_file: str = Field("", description="CA to trust for the hub's HTTPS (per client)")
    workers: int = Field(
        8, ge=1, le=64, description="hub lane: threads for quick hub calls (jobs, twins, queries)"
    )
    hub_queue: int = Field(
        256, ge=0, le=10_000, description="hub lane: calls that may wait for a thread; more: 503"
    )
    device_calls: int = Field(
        32, ge=1, le=1024, description="device lane: direct-method calls at once; more: 503"
    )
    max_rows_per_call: int = Field(
        5000, ge=1, description="rows (jobs, job results) one call may read from the hub"
    )
    max_bytes_per_call: int = Field(
        8_388_608, ge=65_536, description="bytes of hub answers one call may read"
    )
    request_timeout: float = Field(30.0, gt=0, description="deadline of one hub call, s")
    read_retries: int = Field(3, ge=0, le=10, description="retries of reads and throttling")
    retry_initial_delay: float = Field(0.5, gt=0, description="first retry delay, s")
    tier: Literal["F1", "S1", "S2", "S3"] = Field(
        "S1", description="the hub's tier: its concurrent-job quota and device-operation pace"
    )
    tier_units: int = Field(1, ge=1, le=200, description="the hub's units (S2/S3 pace)")
    max_concurrent_jobs: int = Field(
        0, ge=0, le=100, description="hub jobs queued or running at once; 0 = the tier's quota"
    )

    @model_validator(mode="after")
    def _secret_from_file(self) -> IotHubSettings:
        if self.connection_string_file:
            self.connection_string = _read_secret_file(self.connection_string_file)
        return self


class JobSettings(_Section):
    """Defaults and limits of the device-job services (SERVICES.md)."""

    default_connect_timeout: int = Field(30, ge=1, le=300, description="connect timeout, s")
    default_response_timeout: int = Field(30, ge=5, le=300, description="method response, s")
    default_max_execution_time: int = Field(
        3600,
        ge=1,
        le=30 * 24 * 3600,  # services.rules.MAX_EXECUTION_TIME_RANGE (a test keeps them equal)
        description="job window, s (at most 30 days, the longest window the services accept)",
    )
    direct_connect_timeout: int = Field(
        10, ge=0, le=300, description="a direct call's default connect timeout, s"
    )
    direct_response_timeout: int = Field(
        10, ge=5, le=300, description="a direct call's default method response timeout, s"
    )
    direct_call_margin: float = Field(5.0, ge=0, description="extra deadline for direct calls")
    call_deadline: float = Field(60.0, gt=0, description="deadline of a non-method service call")
    query_page_size: int = Field(100, ge=1, le=1000, description="page size of hub queries")
    default_max_rows: int = Field(1000, ge=1, description="QueryJobResults default maxRows")
    wrappers_dir: str = Field("config/wrappers", description="wrapper declarations folder")
    watch_interval: float = Field(
        5.0, gt=0, description="seconds between two hub reads of an active job (one watcher)"
    )
    watch_max_interval: float = Field(
        60.0, gt=0, description="longest watch interval, reached by long jobs (backing off)"
    )


class RolloutSettings(_Section):
    """Rollouts (docs/rollouts.md): where their state is kept and how often the engine looks."""

    data_dir: str = Field("data", description="the agent's data directory (rollouts.sqlite)")
    poll_interval: float = Field(
        2.0, gt=0, le=300, description="seconds between two looks at a running wave's hub job"
    )


class StoreSettings(_Section):
    """Where the agent keeps its own state (rollouts, admission, audit; docs/operations.md).

    Empty ``url``: SQLite files in ``rollouts.data_dir`` (one agent, the embedded default).
    ``postgresql://...``: a PostgreSQL database shared by several agents of one hub, one of them
    active (it holds the leadership) and the others standby.
    """

    url: SecretStr = Field(
        SecretStr(""), description="empty = SQLite in rollouts.data_dir; postgresql://... shared"
    )
    url_file: str = Field("", description="file holding the store URL (it may carry a password)")
    takeover_seconds: float = Field(
        15.0, gt=0, le=600, description="a standby agent takes over within this, s"
    )

    @model_validator(mode="after")
    def _secret_from_file(self) -> StoreSettings:
        if self.url_file:
            self.url = _read_secret_file(self.url_file)
        url = self.url.get_secret_value()
        if url and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("store.url must be empty (SQLite) or start with postgresql://")
        return self

    @property
    def shared(self) -> bool:
        """True when the store is a shared PostgreSQL database."""
        return bool(self.url.get_secret_value())


class AuditSettings(_Section):
    """The audit log of changing calls (docs/operations.md "The audit log"); kept in the store."""

    queue_size: int = Field(
        10_000, ge=1, le=1_000_000, description="entries kept in memory while the store is down"
    )
    max_inputs_chars: int = Field(
        4096, ge=256, le=1_000_000, description="a call's inputs are cut past this, with a marker"
    )
    retry_interval: float = Field(
        1.0, gt=0, le=60, description="first wait before writing again to a store that failed, s"
    )
    retry_max_interval: float = Field(
        30.0, gt=0, le=600, description="longest wait between two writes to a failed store, s"
    )
    store_timeout: float = Field(
        5.0,
        gt=0,
        le=60,
        description="a store connection attempt; QueryAudit's and the exit's wait for the queue, s",
    )


class LogSettings(_Section):
    """structlog output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    format: Literal["auto", "console", "json"] = Field(
        "auto", description="auto = console in a terminal, JSON otherwise"
    )


class HealthSettings(_Section):
    """The agent's /healthz and /metrics endpoint."""

    enabled: bool = Field(True, description="serve /healthz and /metrics")
    host: str = Field("127.0.0.1", description="address of /healthz and /metrics")
    port: int = Field(9102, ge=0, le=65535, description="port of /healthz and /metrics")
    probe_interval: float = Field(
        15.0, gt=0, description="seconds between two IoT Hub probes (one list-jobs read)"
    )


class EmbeddedSettings(_Section):
    """The embedded run: the bundled IoT Hub emulator and ThingWorx stand-in on loopback."""

    host: str = Field(
        "127.0.0.1", description="address of both emulated ends, as put in URLs and strings"
    )
    bind_host: str = Field(
        "", description="address the emulated ends listen on; empty = host (0.0.0.0 in Docker)"
    )
    # The C SDK formats the port as a signed 16-bit number: keep the stand-in below 32768.
    thingworx_port: int = Field(8080, ge=0, le=32767, description="stand-in REST/console/WS")
    iothub_rest_port: int = Field(8443, ge=0, le=65535, description="emulator HTTPS port")
    devices: int = Field(50, ge=0, description="simulated devices device-0001...")
    offline_share: float = Field(0.1, ge=0, le=1, description="share of devices kept offline")
    answer_delay: float = Field(0.0, ge=0, description="simulated devices' method delay, s")
    tier: Literal["", "S1", "S2", "S3"] = Field("", description="job quotas; empty = none")
    data_dir: str = Field("data", description="emulator state (SQLite, certificates)")


class Settings(BaseSettings):
    """Everything the agent is configured with."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
    )

    thingworx: ThingWorxSettings = ThingWorxSettings()
    iothub: IotHubSettings = IotHubSettings()
    jobs: JobSettings = JobSettings()
    log: LogSettings = LogSettings()
    health: HealthSettings = HealthSettings()
    rollouts: RolloutSettings = RolloutSettings()
    store: StoreSettings = StoreSettings()
    audit: AuditSettings = AuditSettings()
    embedded: EmbeddedSettings = EmbeddedSettings()

    @field_validator("thingworx")
    @classmethod
    def _thing_names(cls, value: ThingWorxSettings) -> ThingWorxSettings:
        for name in [value.gateway_thing, *value.auto_bind]:
            if not name or len(name.encode()) >= 128:
                raise ValueError(f"Thing name {name!r} must be 1..127 bytes")
        return value

    @model_validator(mode="after")
    def _direct_calls_fit(self) -> Settings:
        jobs, twx = self.jobs, self.thingworx
        total = jobs.direct_connect_timeout + jobs.direct_response_timeout + jobs.direct_call_margin
        if total > twx.request_timeout:
            raise ValueError(
                f"jobs.direct_connect_timeout ({jobs.direct_connect_timeout}) + "
                f"jobs.direct_response_timeout ({jobs.direct_response_timeout}) + "
                f"jobs.direct_call_margin ({jobs.direct_call_margin:g}) = {total:g} s does not fit "
                f"in thingworx.request_timeout ({twx.request_timeout:g} s): lower them"
            )
        return self

    @property
    def embedded_mode(self) -> bool:
        """True when neither end is configured: run against the bundled emulators."""
        return not self.thingworx.url and not self.iothub.connection_string.get_secret_value()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_toml_path())
        return (init_settings, env_settings, toml)


_toml_override: list[Path] = []


def _toml_path() -> Path | None:
    path = _toml_override[-1] if _toml_override else default_config_path()
    return path if path.is_file() else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load the settings from ``config_file`` (default: see :func:`default_config_path`), the
    environment and ``overrides``.

    Raises:
        pydantic.ValidationError: with every wrong key named.
        FileNotFoundError: when ``config_file`` is given and missing.
    """
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"configuration file {config_file} not found")
    _toml_override.append(config_file or default_config_path())
    try:
        return Settings(**overrides)
    finally:
        _toml_override.pop()


def _env_name(loc: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(part.upper() for part in loc)


def _known_keys(loc: tuple[str, ...]) -> list[str]:
    """The keys the settings know at the level of ``loc`` (its last part excluded)."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def settings_errors(exc: ValidationError, config_file: Path | None = None) -> list[str]:
    """One line per wrong setting: the file key and its environment variable, what is wrong,
    and for an unknown key the closest right one (pydantic's text and URL left out).

    Args:
        exc: what loading the settings raised.
        config_file: the TOML file the settings were read from, to name it.
    """
    where_file = str(config_file or default_config_path())
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        key = ".".join(loc)
        env = _env_name(loc)
        source = f"environment variable {env}" if env in os.environ else f"{key} in {where_file}"
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc[-1], _known_keys(loc), n=1)
            right = ".".join((*loc[:-1], close[0])) if close else ""
            hint = f"; did you mean {right} ({_env_name((*loc[:-1], close[0]))})?" if close else ""
            lines.append(f"unknown setting {key} ({source}){hint}")
            continue
        message = str(error["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        got = error.get("input")
        shown = (
            ""
            if isinstance(got, dict)
            or got is None
            or any(w in key for w in ("key", "secret", "connection", "password", "store.url"))
            else f"; got {got!r}"
        )
        lines.append(f"setting {key} ({source}): {message[:1].lower()}{message[1:]}{shown}")
    return lines
