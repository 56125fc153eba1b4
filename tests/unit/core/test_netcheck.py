"""The network check's pure logic: server split, candidates, outcomes, verdict, report."""

import json

import pytest

from coview import netcheck as N

ICE = [
    {"urls": "stun:stun.example:3478"},
    {
        "urls": [
            "turn:turn.example:3478",
            "turn:turn.example:3478?transport=tcp",
            "turns:turn.example:443?transport=tcp",
        ],
        "username": "1700000000:abc",
        "credential": "pw",
    },
]

HOST = "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0"
SRFLX = "candidate:2 1 udp 1686052607 203.0.113.5 40000 typ srflx raddr 127.0.0.1 rport 50000"
RELAY = "candidate:3 1 udp 41885439 127.0.0.1 40123 typ relay raddr 127.0.0.1 rport 50001"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("stun:a:3478", N.STUN),
        ("stuns:a", N.STUN),
        ("turn:a", N.TURN_UDP),
        ("turn:a:3478?transport=udp", N.TURN_UDP),
        ("turn:a:3478?transport=tcp", N.TURN_TCP),
        ("turns:a:443", N.TURN_TCP),
        ("http://a", None),
    ],
)
def test_url_kind(url, kind):
    assert N.url_kind(url) == kind


def test_servers_for_splits_by_transport_and_keeps_credentials():
    assert N.servers_for(ICE, N.STUN) == [{"urls": ["stun:stun.example:3478"]}]
    assert N.servers_for(ICE, N.TURN_UDP) == [
        {"urls": ["turn:turn.example:3478"], "username": "1700000000:abc", "credential": "pw"}
    ]
    tcp = N.servers_for(ICE, N.TURN_TCP)
    assert tcp[0]["urls"] == [
        "turn:turn.example:3478?transport=tcp",
        "turns:turn.example:443?transport=tcp",
    ]
    assert tcp[0]["credential"] == "pw"


def test_servers_for_nothing_configured():
    assert N.servers_for([], N.STUN) == []
    assert N.servers_for([{"urls": "stun:a"}], N.TURN_UDP) == []
    assert N.servers_for([{"nonsense": 1}, "x"], N.STUN) == []  # type: ignore[list-item]


def test_parse_candidate():
    c = N.parse_candidate(SRFLX)
    assert c == {
        "type": "srflx",
        "protocol": "udp",
        "address": "203.0.113.5",
        "port": 40000,
        "relay_protocol": None,
    }
    assert N.parse_candidate("a=" + RELAY, "TCP")["relay_protocol"] == "tcp"
    assert N.parse_candidate("") is None
    assert N.parse_candidate("candidate:1 1 udp 1 1.2.3.4 notaport typ host") is None


def test_matching_candidates():
    host, srflx = N.parse_candidate(HOST), N.parse_candidate(SRFLX)
    assert N.matching([host], N.STUN) is None
    assert N.matching([host, srflx], N.STUN) is srflx
    udp_relay = N.parse_candidate(RELAY, "udp")
    tcp_relay = N.parse_candidate(RELAY, "tcp")
    tls_relay = N.parse_candidate(RELAY, "tls")
    unknown = N.parse_candidate(RELAY)
    assert N.matching([udp_relay], N.TURN_UDP) is udp_relay
    assert N.matching([udp_relay], N.TURN_TCP) is None
    assert N.matching([tcp_relay], N.TURN_TCP) is tcp_relay
    assert N.matching([tls_relay], N.TURN_TCP) is tls_relay
    assert N.matching([unknown], N.TURN_TCP) is unknown
    assert N.matching([srflx], N.TURN_UDP) is None


def test_ice_outcomes():
    srflx = N.parse_candidate(SRFLX)
    relay = N.parse_candidate(RELAY, "tcp")
    assert N.ice_outcome(N.STUN, False, [], [], True, 0) == ("skip", "No STUN server configured.")
    assert N.ice_outcome(N.TURN_TCP, False, [], [], True, 0)[0] == "skip"
    status, detail = N.ice_outcome(N.STUN, True, [srflx], [], False, 12.7)
    assert status == "pass" and detail == "Public address 203.0.113.5:40000 in 12 ms."
    status, detail = N.ice_outcome(N.TURN_TCP, True, [relay], [], True, 30)
    assert status == "pass" and "Relayed address 127.0.0.1:40123 (via TCP)" in detail
    status, detail = N.ice_outcome(N.TURN_UDP, True, [], ["turn:x: 401 Unauthorized"], False, 5000)
    assert status == "fail"
    assert "timed out after 5000 ms" in detail and "401 Unauthorized" in detail
    status, detail = N.ice_outcome(N.STUN, True, [], [], True, 40)
    assert status == "fail" and "no answer" in detail
    # Gathering ended early, no error, only host candidates: the STUN server answered with
    # the host's own address (the browser drops the duplicate srflx).
    host = N.parse_candidate(HOST)
    status, detail = N.ice_outcome(N.STUN, True, [host], [], True, 40)
    assert status == "pass" and "own address" in detail
    assert N.ice_outcome(N.STUN, True, [host], [], False, 5000)[0] == "fail"
    assert N.ice_outcome(N.STUN, True, [host], ["stun: 701"], True, 40)[0] == "fail"
    assert N.ice_outcome(N.TURN_UDP, True, [], [], True, 40)[0] == "fail"
    assert N.ice_outcome(N.STUN, True, [], [], True, 0, "TypeError: bad")[0] == "fail"


def test_websocket_outcome():
    good = json.dumps({"type": "error", "code": "handshake_required", "text": "x"})
    assert N.websocket_outcome(good, None)[0] == "pass"
    assert N.websocket_outcome(None, "closed (code 1006)") == ("fail", "closed (code 1006)")
    assert N.websocket_outcome(None, None)[0] == "fail"
    assert N.websocket_outcome("<html>", None)[0] == "fail"
    assert N.websocket_outcome(json.dumps({"type": "welcome"}), None)[0] == "fail"


def results(**statuses):
    out = {c: {"status": "pass", "detail": "fine"} for c in N.CHECKS}
    for check, status in statuses.items():
        out[check] = {"status": status, "detail": status + " detail"}
    return out


@pytest.mark.parametrize(
    ("statuses", "level", "words"),
    [
        ({}, "ok", "Screen sharing should work on this network."),
        ({"turn_udp": "fail", "turn_tcp": "fail"}, "ok", "should work"),
        (
            {"stun": "fail"},
            "warn",
            "Direct connections may fail; sharing will go through the TURN relay.",
        ),
        ({"stun": "fail", "turn_udp": "fail"}, "warn", "Only TCP"),
        (
            {"stun": "skip", "turn_udp": "skip", "turn_tcp": "skip", "relay": "skip"},
            "warn",
            "No STUN or TURN",
        ),
        (
            {"stun": "fail", "turn_udp": "skip", "turn_tcp": "skip", "relay": "skip"},
            "bad",
            "no TURN relay",
        ),
        (
            {"stun": "fail", "turn_udp": "fail", "turn_tcp": "fail", "relay": "fail"},
            "bad",
            "Your network blocks everything Coview needs: Direct connections (STUN), "
            "TURN relay over UDP, TURN relay over TCP, Coview's media relay.",
        ),
        (
            {
                "websocket": "fail",
                "stun": "fail",
                "turn_udp": "fail",
                "turn_tcp": "fail",
                "relay": "fail",
            },
            "bad",
            "blocks everything Coview needs: Connection to the Coview server (WebSocket),",
        ),
        # Nothing but Coview's own relay gets through: sharing still works, relayed.
        (
            {"stun": "fail", "turn_udp": "fail", "turn_tcp": "fail"},
            "warn",
            "screen sharing will go through Coview's own media relay.",
        ),
        (
            {"stun": "skip", "turn_udp": "skip", "turn_tcp": "skip"},
            "warn",
            "Coview's own media relay",
        ),
        # TURN is preferred in the words when both work (it is what a share tries first).
        ({"stun": "fail"}, "warn", "through the TURN relay"),
        ({"websocket": "fail"}, "bad", "blocks the connection to the Coview server"),
        ({"capture": "fail"}, "bad", "this browser cannot share its screen"),
        ({"stun": "fail", "capture": "fail"}, "bad", "Also, this browser cannot share"),
    ],
)
def test_verdict(statuses, level, words):
    v = N.verdict(results(**statuses))
    assert v["level"] == level
    assert words in v["text"]


def test_relay_outcome():
    assert N.relay_outcome(404, "off", 0, 10) == (
        "skip",
        "The media relay is turned off on this server.",
    )
    status, detail = N.relay_outcome(200, None, 12, 640.4)
    assert (status, detail) == ("pass", "Received the relay's test picture in 640 ms.")
    status, detail = N.relay_outcome(200, None, 0, 8000)
    assert status == "fail" and "No picture from the relay within 8000 ms" in detail
    assert "UDP to the Coview server seems blocked" in detail
    status, detail = N.relay_outcome(429, "Too many checks", 0, 5)
    assert status == "fail" and "HTTP 429: Too many checks" in detail
    status, detail = N.relay_outcome(None, "TypeError: Failed to fetch", 0, 5)
    assert status == "fail" and "(TypeError: Failed to fetch)" in detail
    assert N.relay_outcome(None, None, 0, 5)[1].endswith("(no answer).")


def test_report_lists_every_check_with_detail():
    text = N.report(results(stun="skip"), "Chrome 156 on Linux", "2026-11-23T10:00:00.000Z", "V.")
    assert text.startswith("Coview network check\nTime: 2026-11-23T10:00:00.000Z\n")
    assert "Browser: Chrome 156 on Linux" in text
    for n, check in enumerate(N.CHECKS, 1):
        assert str(n) + ". " + N.LABELS[check] + ": " in text
    assert "2. Direct connections (STUN): Not configured\n   skip detail" in text
    assert text.rstrip().endswith("Verdict: V.")
    assert "Verdict" not in N.report(results(), "b", "t")
