"""Connection quality from two ``getStats()`` snapshots, for the agent's quality panel.

The browser shell flattens the RTCStatsReport into a list of plain dicts; this module
picks the inbound video, the selected candidate pair and its candidates.  Byte counters
arrive as floats: MicroPython wraps integers crossing the FFI to 32 bits.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _index(stats: "list[dict[str, Any]]") -> "dict[str, dict[str, Any]]":
    out = {}
    for entry in stats:
        ident = entry.get("id")
        if isinstance(ident, str):
            out[ident] = entry
    return out


def _find(stats: "list[dict[str, Any]]", kind: str) -> "dict[str, Any] | None":
    for entry in stats:
        if entry.get("type") == "inbound-rtp" and entry.get("kind") == kind:
            return entry
    return None


def selected_pair(stats: "list[dict[str, Any]]") -> "dict[str, Any] | None":
    by_id = _index(stats)
    for entry in stats:
        if entry.get("type") == "transport":
            pair = by_id.get(entry.get("selectedCandidatePairId") or "")
            if pair is not None:
                return pair
    best = None
    for entry in stats:
        if entry.get("type") == "candidate-pair" and entry.get("state") == "succeeded":
            if entry.get("nominated") or best is None:
                best = entry
    return best


def path_of(stats: "list[dict[str, Any]]", via_relay: bool = False) -> str:
    """``relay`` (our media relay), ``turn`` (a TURN candidate is in use) or ``direct``."""
    if via_relay:
        return "relay"
    pair = selected_pair(stats)
    if pair is None:
        return "unknown"
    by_id = _index(stats)
    for key in ("localCandidateId", "remoteCandidateId"):
        cand = by_id.get(pair.get(key) or "")
        if cand is not None and cand.get("candidateType") == "relay":
            return "turn"
    return "direct"


def _num(entry: "dict[str, Any] | None", key: str) -> "float | None":
    if entry is None:
        return None
    value = entry.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def summarize(
    prev: "list[dict[str, Any]] | None", cur: "list[dict[str, Any]]", via_relay: bool = False
) -> "dict[str, Any]":
    """Resolution, frame rate, bitrate (kbit/s), round-trip time (ms) and path."""
    video = _find(cur, "video")
    old = _find(prev, "video") if prev else None
    bitrate = None
    fps = _num(video, "framesPerSecond")
    b1, t1 = _num(video, "bytesReceived"), _num(video, "timestamp")
    b0, t0 = _num(old, "bytesReceived"), _num(old, "timestamp")
    if b1 is not None and t1 is not None and b0 is not None and t0 is not None and t1 > t0:
        bitrate = round((b1 - b0) * 8 / (t1 - t0), 1)  # bytes per ms * 8 = kbit/s
        f1, f0 = _num(video, "framesDecoded"), _num(old, "framesDecoded")
        if fps is None and f1 is not None and f0 is not None:
            fps = round((f1 - f0) * 1000 / (t1 - t0), 1)
    pair = selected_pair(cur)
    rtt = _num(pair, "currentRoundTripTime")
    width = _num(video, "frameWidth")
    height = _num(video, "frameHeight")
    return {
        "width": int(width) if width is not None else None,
        "height": int(height) if height is not None else None,
        "fps": fps,
        "bitrate_kbps": bitrate,
        "rtt_ms": round(rtt * 1000, 1) if rtt is not None else None,
        "path": path_of(cur, via_relay),
        "frames_decoded": _num(video, "framesDecoded"),
    }
