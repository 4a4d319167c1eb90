"""Every UNCONFIRMED point the stand-in acts on, and every choice of its own, in one place.

The AlwaysOn reference (``/work/shared/reference/alwayson.md``, §13) marks what no public source
confirms. Points the edge agent shares with the stand-in live in
:mod:`agent.alwayson.unconfirmed` and are re-exported here, so both sides change together; the
points that only a server meets are constants below, each with the section it comes from, so that
a correction is a one-line change.

Rules: plain constants only; this module imports nothing of the stand-in.
"""

from __future__ import annotations

from typing import Final

from agent.alwayson import (
    AUTH_FAILURE_STATUS,
    BIND_MULTIPART_ACCEPTED,
    BIND_REFUSED_STATUS,
    DEFAULT_MAX_FRAME_SIZE,
    GET_METADATA_METHOD,
    GET_PROPERTY_SUBSCRIPTIONS,
    NOTIFY_PROPERTY_UPDATE_METHOD,
    SERVICE_CALL_METHOD,
    UPDATE_SUBSCRIBED_PROPERTY_VALUES,
)

__all__ = [
    "APP_KEY_CLAIM",
    "AUTH_FAILURE_CLOSES",
    "AUTH_FAILURE_STATUS",
    "BIND_MULTIPART_ACCEPTED",
    "BIND_POLICIES",
    "BIND_REFUSED_STATUS",
    "COMPRESS_SERVER_FRAMES",
    "DEFAULT_BIND_POLICY",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_REQUEST_TIMEOUT",
    "GET_METADATA_AFTER_BIND",
    "GET_METADATA_METHOD",
    "GET_METADATA_SERVICE",
    "GET_PROPERTY_SUBSCRIPTIONS_SERVICE",
    "NOTIFY_PROPERTY_UPDATE_METHOD",
    "NOTIFY_PROPERTY_UPDATE_SERVICE",
    "NO_INPUTS_AS_NOTHING",
    "REASON_COLUMN",
    "REQUEST_BEFORE_AUTH_CLOSES",
    "SERVICE_CALL_METHOD",
    "STALE_MULTIPART_SECONDS",
    "SUBSCRIBE_DECLARED_PROPERTIES",
    "UNKNOWN_INPUTS_REFUSED",
    "UPDATE_SUBSCRIBED_PROPERTY_VALUES_SERVICE",
]

# §5.3: the claim carrying the application key (confirmed); the only claim the stand-in accepts.
APP_KEY_CLAIM: Final = "appKey"

# §5.3, §13: whether the server closes the websocket after answering a rejected AUTH.
# Inference "closing likely": the stand-in answers UNAUTHORIZED, then closes (1008).
AUTH_FAILURE_CLOSES: Final = True

# §7.1, §13 (our choice): a BIND or request before AUTH is answered UNAUTHORIZED and the link stays
# open, so the client may still authenticate.
REQUEST_BEFORE_AUTH_CLOSES: Final = False

# §9 (confirmed by the WSCommunicationsSubsystem page): the platform's "Bind Protection Policy",
# default First-in-wins: a BIND of a Thing another connection holds is rejected (answered
# BIND_REFUSED_STATUS, whose wire form is the unconfirmed part, for the whole BIND). Last-in-wins:
# the new BIND is accepted and the older connection is not told (logged as "thing rebound").
BIND_POLICIES: Final = ("first-in-wins", "last-in-wins")
DEFAULT_BIND_POLICY: Final = "first-in-wins"

# WSCommunicationsSubsystem page: "Amount of time a request will wait for the response message
# before timing out", default 30 s. A call the edge does not answer in time fails (REST 504).
DEFAULT_REQUEST_TIMEOUT: Final = 30.0

# §7.4, §13: the real platform probably calls GetMetadata only when someone browses the Thing.
# The stand-in calls it right after NotifyPropertyUpdate, so that inputs can be typed from it
# (reference "read first"); it calls it again on demand when it has no metadata yet.
GET_METADATA_AFTER_BIND: Final = True

# §7.2, §7.4, §7.5, §13: params of NotifyPropertyUpdate / GetMetadata and of a call to a service
# without inputs: NOTHING (``FF``) rather than an empty InfoTable (the edge must accept both).
NO_INPUTS_AS_NOTHING: Final = True

# §1.4, §12: the C SDK is known to accept *uncompressed* server frames on a compressed session;
# whether it inflates compressed server frames was not observed. Off by default (our frames go
# uncompressed even when permessage-deflate was negotiated); ``ThingWorxStandIn(compress=True)``
# turns it on.
COMPRESS_SERVER_FRAMES: Final = False

# §12: a failed service reply from a C SDK edge puts its text in a ``reason`` column of the
# content InfoTable (the reason marker stays 0).
REASON_COLUMN: Final = "reason"

# §1.5, §6.5: incomplete multipart sets are dropped after 5 x the 10 s message timeout.
STALE_MULTIPART_SECONDS: Final = 50.0

# Our choice (docs/thingworx-standin.md): a REST input the Thing's metadata does not list is
# refused with 400 naming it, rather than passed through typed from its JSON look (§12 warns that
# an edge misreads a value of the wrong base type).
UNKNOWN_INPUTS_REFUSED: Final = True

# Our choice (§7.2): on a real server a property is pushed only once a user binds it remotely
# in Composer. The stand-in has no Composer: every property the edge's metadata declares with a
# pushType other than NEVER is answered as subscribed by GetPropertySubscriptions.
SUBSCRIBE_DECLARED_PROPERTIES: Final = True
# §7.2 to §7.4: service names of the synchronisation and discovery protocol.
NOTIFY_PROPERTY_UPDATE_SERVICE: Final = "NotifyPropertyUpdate"
GET_METADATA_SERVICE: Final = "GetMetadata"
GET_PROPERTY_SUBSCRIPTIONS_SERVICE: Final = GET_PROPERTY_SUBSCRIPTIONS
UPDATE_SUBSCRIBED_PROPERTY_VALUES_SERVICE: Final = UPDATE_SUBSCRIBED_PROPERTY_VALUES
