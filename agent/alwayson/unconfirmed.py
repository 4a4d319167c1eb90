"""Every UNCONFIRMED point of the AlwaysOn reference, in one place.

The reference (``/work/shared/reference/alwayson.md``) marks what no public source confirms and
gives a best inference (collected in its §13). Each inference this package acts on is one
constant here, with the section it comes from, so that a correction is a one-line change and
both sides of the project (the edge agent and the ThingWorx stand-in) change together.

Rules: plain constants and ``struct.Struct`` objects only; this module imports nothing from the
package, so everything else may import it.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "AUTH_FAILURE_STATUS",
    "BIND_MULTIPART_ACCEPTED",
    "BIND_REFUSED_STATUS",
    "DEFAULT_MAX_FRAME_SIZE",
    "GET_METADATA_METHOD",
    "LONG_STRUCT",
    "NOTIFY_PROPERTY_UPDATE_METHOD",
    "PASSWORD_CLAIM",
    "SCHEDULE_IS_STRING",
    "SERVICE_CALL_METHOD",
    "SERVICE_CALL_USER_HEADER",
    "SERVICE_IS_ASYNC_ASPECT",
    "TAGS_IS_STRING",
    "TIMESPAN_STRUCT",
    "USER_CLAIM",
]

# §3.2, §13: LONG (23) is not in the C SDK; an independent PTC-authored codec models it as i64.
LONG_STRUCT: Final = struct.Struct(">q")

# §3.2, §13: TIMESPAN (4) is not implemented by the C SDK; inference: int64 milliseconds, BE.
TIMESPAN_STRUCT: Final = struct.Struct(">q")

# §3.2, §13: SCHEDULE (17) is not parsed by the C SDK; inference: a string (cron text).
SCHEDULE_IS_STRING: Final = True

# §3.2, §13: TAGS travel as a string; the text format ("vocab:term;...") is not interpreted here.
TAGS_IS_STRING: Final = True

# §5.1, §7.5, §12, §13: the method code the platform uses for service calls, NotifyPropertyUpdate
# and GetMetadata. A C SDK edge serves POST calls and ignores the method for services.
SERVICE_CALL_METHOD: Final = 0x03
NOTIFY_PROPERTY_UPDATE_METHOD: Final = SERVICE_CALL_METHOD
GET_METADATA_METHOD: Final = SERVICE_CALL_METHOD

# §5.3, §13: the status the server answers a rejected AUTH with (the edge treats any non-SUCCESS
# status as failure, so only the stand-in's choice depends on this).
AUTH_FAILURE_STATUS: Final = 0x81

# §5.4, §9, §13: the status a server answers a BIND with when its bind protection policy
# (first-in-wins, the platform's default: "the platform rejects the new bind attempt", ThingWorx
# WSCommunicationsSubsystem page) refuses it because another connection holds one of its Things.
# The refusal is documented, its wire form is not: inference FORBIDDEN 0x83 with a free-text
# reason, one status for the whole BIND (§5.4 has a single status per BIND). The agent takes this
# status as "another agent is active" and waits as a standby; any other refusal stays an error.
BIND_REFUSED_STATUS: Final = 0x83

# §5.3, §13: claim names for user/password authentication (appKey is confirmed).
USER_CLAIM: Final = "userid"
PASSWORD_CLAIM: Final = "password"

# §5.1, §13: a service request's body has (name, value) headers, empty in practice (the C SDK
# never reads them); no source says the platform names the calling user there. Inference: it
# does not, so the audit log's user is empty; should a platform send the user, it is expected
# under this header name, which the agent records as the call's user.
SERVICE_CALL_USER_HEADER: Final = "user"

# §6.4, §13: whether a multipart BIND/UNBIND is reassembled like a response (the C SDK's own
# parser never does; a stand-in server should).
BIND_MULTIPART_ACCEPTED: Final = True

# §7.4, §13: whether to emit ``aspects.isAsync`` on service definitions in GetMetadata JSON.
# The C SDK emits nothing; None keeps it that way, a bool would emit it with that value.
SERVICE_IS_ASYNC_ASPECT: Final[bool | None] = None

# §1.1, §13: the Max-Frame-Size a server assumes when the upgrade request does not send one.
DEFAULT_MAX_FRAME_SIZE: Final = 8192
