"""``getStats()`` flattened into plain dicts for :mod:`coview.quality`.

Only the fields the quality panel needs cross the FFI.  Counters and timestamps are
converted to floats on the JS side first: MicroPython wraps integers to 32 bits.

Browsers differ (docs/browsers.md): older Firefox releases have no ``transport`` entry naming
the selected candidate pair, only a ``selected`` flag on the pair itself; a transport
entry is made up from it here, and a pair without ``currentRoundTripTime`` gets its mean
round-trip time, so :mod:`coview.quality` reads every browser the same way.
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
    "totalRoundTripTime",
    "responsesReceived",
    "candidateType",
    "relayProtocol",
    "protocol",
    "selected",
)
_TEXT = (
    "id",
    "type",
    "kind",
    "selectedCandidatePairId",
    "state",
    "localCandidateId",
    "remoteCandidateId",
    "candidateType",
    "relayProtocol",
    "protocol",
)


def _flatten(entry):
    out = {}
    for name in _FIELDS:
        value = ffi.prop(entry, name)
        if ffi.is_none(value):
            continue
        if name in _TEXT:
            out[name] = str(value)
        elif name in ("nominated", "selected"):
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
    return _with_transport(_with_rtt(entries))


def _with_rtt(entries):
    """A pair without ``currentRoundTripTime`` gets its mean round-trip time instead."""
    for entry in entries:
        if entry.get("type") != "candidate-pair" or "currentRoundTripTime" in entry:
            continue
        total = entry.get("totalRoundTripTime")
        count = entry.get("responsesReceived")
        if total is not None and count:
            entry["currentRoundTripTime"] = total / count
    return entries


def _with_transport(entries):
    """Add the ``transport`` entry older Firefox lacks, from its ``selected`` pair."""
    for entry in entries:
        if entry.get("type") == "transport" and entry.get("selectedCandidatePairId"):
            return entries
    for entry in entries:
        if entry.get("type") == "candidate-pair" and entry.get("selected") and entry.get("id"):
            entries.append(
                {
                    "id": "coview-transport",
                    "type": "transport",
                    "selectedCandidatePairId": entry["id"],
                }
            )
            break
    return entries
