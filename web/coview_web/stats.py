"""``getStats()`` flattened into plain dicts for :mod:`coview.quality`.

Only the fields the quality panel needs cross the FFI.  Counters and timestamps are
converted to floats on the JS side first: MicroPython wraps integers to 32 bits.
"""

import js

from coview_web import ffi

_FIELDS = (
    "id",
    "type",
    "kind",
    "bytesReceived",
    "bytesSent",
    "framesDecoded",
    "framesPerSecond",
    "frameWidth",
    "frameHeight",
    "timestamp",
    "selectedCandidatePairId",
    "state",
    "nominated",
    "localCandidateId",
    "remoteCandidateId",
    "currentRoundTripTime",
    "candidateType",
    "relayProtocol",
    "protocol",
)
_TEXT = ("id", "type", "kind", "selectedCandidatePairId", "state", "localCandidateId",
         "remoteCandidateId", "candidateType", "relayProtocol", "protocol")


def _flatten(entry):
    out = {}
    for name in _FIELDS:
        value = ffi.prop(entry, name)
        if ffi.is_none(value):
            continue
        if name in _TEXT:
            out[name] = str(value)
        elif name == "nominated":
            out[name] = bool(value)
        else:
            out[name] = float(str(js.String(value)))
    return out


async def snapshot(pc):
    report = await pc.getStats()
    entries = []

    def visit(value, *rest):
        entries.append(_flatten(value))

    proxy = ffi.create_proxy(visit)
    report.forEach(proxy)
    return entries
