"""The network check page (``/check``): the pure part.

Which ICE servers each check uses, what an ICE candidate says, what one check's outcome is,
the verdict in plain words and the text report for support.  The browser shell
(``web/pages/check.py``) runs the checks and feeds their raw observations in here.

Statuses of one check: ``waiting``, ``running``, ``pass``, ``fail``, ``skip`` (nothing to
check: no such server configured).
"""

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

WEBSOCKET = "websocket"
STUN = "stun"
TURN_UDP = "turn_udp"
TURN_TCP = "turn_tcp"
RELAY = "relay"
CAPTURE = "capture"

#: The checks, in the order they run.
CHECKS = (WEBSOCKET, STUN, TURN_UDP, TURN_TCP, RELAY, CAPTURE)

LABELS = {
    WEBSOCKET: "Connection to the Coview server (WebSocket)",
    STUN: "Direct connections (STUN)",
    TURN_UDP: "TURN relay over UDP",
    TURN_TCP: "TURN relay over TCP",
    RELAY: "Coview's media relay",
    CAPTURE: "Screen sharing in this browser",
}

STATUS_WORDS = {
    "waiting": "Waiting",
    "running": "Checking…",
    "pass": "Passed",
    "fail": "Failed",
    "skip": "Not configured",
}

NETWORK_CHECKS = (WEBSOCKET, STUN, TURN_UDP, TURN_TCP, RELAY)


def status_word(status: str) -> str:
    return STATUS_WORDS.get(status, status)


# --- ICE servers ---------------------------------------------------------------------------


def url_kind(url: str) -> "str | None":
    """``stun``, ``turn_udp`` or ``turn_tcp`` for an ICE server URL; None if unknown.

    ``turns:`` (TURN over TLS) counts as TCP: it is TCP to the relay.
    """
    url = url.strip()
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("stun", "stuns"):
        return STUN
    if scheme == "turns":
        return TURN_TCP
    if scheme == "turn":
        query = url.split("?", 1)[1].lower() if "?" in url else ""
        return TURN_TCP if "transport=tcp" in query else TURN_UDP
    return None


def servers_for(ice_servers: "list[dict[str, Any]]", kind: str) -> "list[dict[str, Any]]":
    """The ``iceServers`` for one check: each entry keeps only the URLs of ``kind``
    (with its credentials); entries left without URLs are dropped."""
    out = []
    for entry in ice_servers or []:
        if not isinstance(entry, dict):
            continue
        urls = entry.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list):
            continue
        kept = [u for u in urls if isinstance(u, str) and url_kind(u) == kind]
        if not kept:
            continue
        server = {"urls": kept}
        if kind != STUN:
            for key in ("username", "credential"):
                if key in entry:
                    server[key] = entry[key]
        out.append(server)
    return out


# --- candidates ----------------------------------------------------------------------------


def parse_candidate(line: str, relay_protocol: "str | None" = None) -> "dict[str, Any] | None":
    """The fields of an ``a=candidate`` line (with or without the ``candidate:`` prefix).

    ``{"type", "protocol", "address", "port", "relay_protocol"}``; ``relay_protocol`` is the
    browser's ``RTCIceCandidate.relayProtocol`` when given (the transport to the TURN server;
    ``protocol`` is the candidate's own transport, UDP for every relayed candidate).
    Returns None for an empty or malformed line (the end-of-candidates marker).
    """
    text = (line or "").strip()
    if text.startswith("a="):
        text = text[2:]
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    parts = text.split()
    if len(parts) < 8 or parts[6] != "typ":
        return None
    try:
        port = int(parts[5])
    except ValueError:
        return None
    found = {
        "type": parts[7].lower(),
        "protocol": parts[2].lower(),
        "address": parts[4],
        "port": port,
        "relay_protocol": relay_protocol.lower() if relay_protocol else None,
    }
    return found


def describe_candidate(cand: "dict[str, Any]") -> str:
    where = _hostport(cand["address"], cand["port"])
    if cand["type"] == "relay":
        via = cand.get("relay_protocol")
        return "relayed address " + where + (" (via " + via.upper() + ")" if via else "")
    if cand["type"] == "srflx":
        return "public address " + where
    return str(cand["type"]) + " candidate " + where


def _hostport(host: str, port: int) -> str:
    return ("[" + host + "]" if ":" in host else host) + ":" + str(port)


def _wanted(cand: "dict[str, Any]", kind: str) -> bool:
    if kind == STUN:
        return bool(cand["type"] == "srflx")
    if cand["type"] != "relay":
        return False
    via = cand.get("relay_protocol")
    if not via:  # the browser does not say: the servers given were of this transport only
        return True
    if kind == TURN_UDP:
        return bool(via == "udp")
    return bool(via in ("tcp", "tls"))


def matching(candidates: "list[dict[str, Any]]", kind: str) -> "dict[str, Any] | None":
    """The first candidate that proves ``kind`` works (a srflx for STUN, a relay of the
    right transport for TURN)."""
    for cand in candidates:
        if _wanted(cand, kind):
            return cand
    return None


def matching_type(candidates: "list[dict[str, Any]]", kind: str) -> bool:
    for cand in candidates:
        if cand["type"] == kind:
            return True
    return False


def ice_outcome(
    kind: str,
    configured: bool,
    candidates: "list[dict[str, Any]]",
    errors: "list[str]",
    finished: bool,
    elapsed_ms: float,
    failure: "str | None" = None,
) -> "tuple[str, str]":
    """``(status, detail)`` of the STUN or a TURN check.

    ``finished``: gathering completed (False: the timeout ended it); ``errors``: the texts
    of ``icecandidateerror`` events; ``failure``: the browser refused to start at all.
    """
    if not configured:
        if kind == STUN:
            return "skip", "No STUN server configured."
        return "skip", "No TURN server for " + (
            "UDP" if kind == TURN_UDP else "TCP"
        ) + " configured."
    if failure:
        return "fail", "The browser could not start the check: " + failure
    found = matching(candidates, kind)
    took = " in " + str(int(elapsed_ms)) + " ms"
    if found is not None:
        text = describe_candidate(found)
        return "pass", text[0].upper() + text[1:] + took + "."
    if kind == STUN and finished and not errors and matching_type(candidates, "host"):
        # Gathering ended early without error: the server answered, with the address the
        # host candidate already has (no NAT), and browsers drop such a duplicate srflx.
        return "pass", (
            "The STUN server answered" + took + " and saw this computer's own address "
            "(no address translation on the way)."
        )
    why = "timed out after " + str(int(elapsed_ms)) + " ms" if not finished else "no answer"
    if kind == STUN:
        detail = "No public address learnt from the STUN server (" + why + ")."
    else:
        detail = "No relayed address from the TURN server (" + why + ")."
    if errors:
        detail += " Errors: " + "; ".join(errors[:3]) + "."
    return "fail", detail


def websocket_outcome(message_text: "str | None", error: "str | None") -> "tuple[str, str]":
    """``(status, detail)`` of the WebSocket check from the server's first answer.

    The page opens ``/ws`` and sends a ``ping`` before any handshake: a working server answers
    with the ``handshake_required`` error (and creates nothing). ``message_text`` is that
    first frame, ``error`` why there was none.
    """
    if message_text is None:
        return "fail", error or "No answer from the server."
    try:
        msg = json.loads(message_text)
    except ValueError:
        return "fail", "The server answered something that is not Coview's protocol."
    if (
        isinstance(msg, dict)
        and msg.get("type") == "error"
        and msg.get("code") == "handshake_required"
    ):
        return "pass", "The server answered over the WebSocket."
    return "fail", "Unexpected answer from the server: " + message_text[:200]


def relay_outcome(
    http_status: "int | None",
    error: "str | None",
    frames: float,
    elapsed_ms: float,
) -> "tuple[str, str]":
    """``(status, detail)`` of the relay check: a test call with the server's media relay.

    ``http_status`` is the answer to the offer (None: no answer at all), ``error`` the
    server's or the browser's words, ``frames`` the test picture's frames decoded before
    the timeout.
    """
    if http_status == 404:
        return "skip", "The media relay is turned off on this server."
    if http_status is None or http_status != 200:
        why = error or "no answer"
        if http_status is not None:
            why = "HTTP " + str(http_status) + ": " + why
        return "fail", "The relay did not answer the test call (" + why + ")."
    if frames > 0:
        return "pass", "Received the relay's test picture in " + str(int(elapsed_ms)) + " ms."
    detail = "No picture from the relay within " + str(int(elapsed_ms)) + " ms"
    if error:
        detail += " (" + error + ")"
    return "fail", detail + ": UDP to the Coview server seems blocked."


# --- verdict and report --------------------------------------------------------------------


def _status(results: "dict[str, Any]", check: str) -> str:
    entry = results.get(check) or {}
    return str(entry.get("status", "waiting"))


def verdict(results: "dict[str, Any]") -> "dict[str, str]":
    """``{"level": "ok"|"warn"|"bad", "text": ...}`` from ``{check: {"status", "detail"}}``."""
    ws = _status(results, WEBSOCKET)
    stun = _status(results, STUN)
    udp = _status(results, TURN_UDP)
    tcp = _status(results, TURN_TCP)
    capture = _status(results, CAPTURE)
    relayed = udp == "pass" or tcp == "pass"
    via_server = _status(results, RELAY) == "pass"
    media_ok = stun == "pass" or relayed or via_server
    failed = [LABELS[c] for c in NETWORK_CHECKS if _status(results, c) == "fail"]
    if ws != "pass":
        level = "bad"
        if media_ok or len(failed) <= 1:
            text = (
                "Your network blocks the connection to the Coview server (WebSocket): "
                "chat and screen sharing cannot start."
            )
        else:
            text = "Your network blocks everything Coview needs: " + ", ".join(failed) + "."
    elif stun == "pass":
        level = "ok"
        text = "Screen sharing should work on this network."
    elif relayed:
        level = "warn"
        text = "Direct connections may fail; sharing will go through the TURN relay."
        if udp != "pass":
            text += " Only TCP reaches the relay, so the picture may lag a little."
    elif via_server:
        level = "warn"
        text = (
            "Direct connections may fail on this network; screen sharing will go through "
            "Coview's own media relay."
        )
    elif stun == "fail" and udp == "skip" and tcp == "skip":
        level = "bad"
        text = (
            "Direct connections fail on this network and no TURN relay is configured: "
            "screen sharing will probably not work."
        )
    elif stun == "skip" and udp == "skip" and tcp == "skip":
        level = "warn"
        text = (
            "No STUN or TURN server is configured: screen sharing works only if this "
            "computer and the agent's can reach each other directly."
        )
    else:
        level = "bad"
        text = "Your network blocks everything Coview needs: " + ", ".join(failed) + "."
    if capture == "fail":
        if level == "ok":
            text = "The network is fine, but this browser cannot share its screen."
        else:
            text += " Also, this browser cannot share its screen."
        level = "bad"
    return {"level": level, "text": text}


def report(
    results: "dict[str, Any]", browser: str, when: str, verdict_text: "str | None" = None
) -> str:
    """The plain-text report a visitor pastes to support."""
    lines = ["Coview network check", "Time: " + when, "Browser: " + browser, ""]
    n = 0
    for check in CHECKS:
        n += 1
        entry = results.get(check) or {}
        lines.append(
            str(n) + ". " + LABELS[check] + ": " + status_word(entry.get("status", "waiting"))
        )
        detail = entry.get("detail")
        if detail:
            lines.append("   " + detail)
    if verdict_text:
        lines.append("")
        lines.append("Verdict: " + verdict_text)
    return "\n".join(lines) + "\n"
