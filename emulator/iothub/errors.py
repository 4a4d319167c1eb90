"""IoT Hub's errors as the emulator raises and serialises them.

One exception, :class:`HubError`, carries the HTTP status, IoT Hub's six-digit error code and its
name, and a message. The REST layer turns it into IoT Hub's error body
(``{"Message": "ErrorCode:<Name>;<text>", "ExceptionMessage": "Tracking ID:..."}`` plus an
``iothub-errorcode`` header); direct-method errors nest a second JSON document in ``Message``
(reference/iothub.md §1.8). Build errors with the named constructors below, so that every code
and name is spelled once.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from emulator.errors import EmulatorError

__all__ = ["JOB_RUN_PRECONDITION_FAILED", "JOB_RUN_PRECONDITION_FAILED_TEXT", "HubError"]


class HubError(EmulatorError):
    """An error IoT Hub answers with.

    Attributes:
        status: the HTTP status code.
        code: IoT Hub's numeric error code, e.g. 404103.
        name: IoT Hub's error name, e.g. ``DeviceNotOnline``.
        message: the human text.
        nested: True for direct-method errors, whose body nests a JSON document.
        info: extra ``info`` members of a nested body (e.g. the timeout).
    """

    def __init__(
        self,
        status: int,
        code: int,
        name: str,
        message: str,
        *,
        nested: bool = False,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code} {name}: {message}")
        self.status = status
        self.code = code
        self.name = name
        self.message = message
        self.nested = nested
        self.info = info or {}

    def body(self, now: datetime, tracking_id: str | None = None) -> dict[str, str]:
        """IoT Hub's JSON error body for this error."""
        tracking = tracking_id or uuid.uuid4().hex
        if self.nested:
            inner = {
                "errorCode": self.code,
                "trackingId": tracking,
                "message": self.message,
                "info": self.info,
                "timestampUtc": now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z",
            }
            return {"Message": json.dumps(inner, separators=(",", ":")), "ExceptionMessage": ""}
        stamp = now.strftime("%m/%d/%Y %H:%M:%S")
        return {
            "Message": f"ErrorCode:{self.name};{self.message}",
            "ExceptionMessage": f"Tracking ID:{tracking}-G:0-TimeStamp:{stamp}",
        }

    # --- named constructors, one per code the emulator uses -------------------------------

    @classmethod
    def generic_bad_request(cls, message: str) -> HubError:
        return cls(400, 400000, "GenericBadRequest", message)

    @classmethod
    def argument_invalid(cls, message: str) -> HubError:
        return cls(400, 400004, "ArgumentInvalid", message)

    @classmethod
    def unauthorized(cls, message: str = "Unauthorized") -> HubError:
        return cls(401, 401002, "IotHubUnauthorizedAccess", message)

    @classmethod
    def device_not_found(cls, device_id: str) -> HubError:
        return cls(404, 404001, "DeviceNotFound", f"Device {device_id} not registered")

    @classmethod
    def job_not_found(cls, job_id: str) -> HubError:
        return cls(404, 404002, "JobNotFound", f"Job with id '{job_id}' does not exist")

    @classmethod
    def device_not_online(cls, connect_timeout: float) -> HubError:
        return cls(
            404,
            404103,
            "DeviceNotOnline",
            "Timed out waiting for device to connect.",
            nested=True,
            info={"timeout": _timespan(connect_timeout)},
        )

    @classmethod
    def operation_not_allowed(cls, message: str) -> HubError:
        return cls(405, 405102, "OperationNotAllowedInCurrentState", message)

    @classmethod
    def job_already_exists(cls, job_id: str) -> HubError:
        return cls(409, 409104, "JobAlreadyExists", f"Job with id '{job_id}' already exists")

    @classmethod
    def device_already_exists(cls, device_id: str) -> HubError:
        return cls(409, 409001, "DeviceAlreadyExists", f"Device {device_id} already exists")

    @classmethod
    def precondition_failed(cls, message: str) -> HubError:
        return cls(412, 412001, "PreconditionFailed", message)

    @classmethod
    def throttled(cls, message: str = "Throttling") -> HubError:
        return cls(429, 429001, "ThrottlingException", message)

    @classmethod
    def max_active_jobs(cls, limit: int) -> HubError:
        return cls(
            429,
            429004,
            "ThrottlingMaxActiveJobCountExceeded",
            f"Maximum number of active jobs ({limit}) exceeded for this hub tier",
        )

    @classmethod
    def gateway_timeout(cls, response_timeout: float) -> HubError:
        return cls(
            504,
            504101,
            "GatewayTimeout",
            "Timed out waiting for the response from device.",
            nested=True,
            info={"timeout": _timespan(response_timeout)},
        )


# Device-job error codes as they appear in devices.jobs rows (not HTTP answers).
JOB_RUN_PRECONDITION_FAILED = "JobRunPreconditionFailed"
JOB_RUN_PRECONDITION_FAILED_TEXT = (
    "The job did not start within specified period: either device did not come online "
    "or invalid endTime specified."
)


def _timespan(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
