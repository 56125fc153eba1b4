"""The wire protocol: every message type, every field rule, every way a frame can be bad.

The examples table below must name every type in ``MESSAGES`` and every field of each
type, so adding a message or a field without a test fails here first.
"""

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from coview import protocol
from coview.protocol import (
    BAD_FIELD,
    BAD_JSON,
    BOTH,
    C2S,
    ERROR_CODES,
    MAX_MESSAGE_BYTES,
    MESSAGES,
    NOT_OBJECT,
    S2C,
    TOO_LARGE,
    UNKNOWN_TYPE,
    WRONG_DIRECTION,
    ProtocolError,
    decode,
    encode,
    make,
    validate,
)

UA_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
CANDIDATE = {
    "candidate": (
        "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx "
        "raddr 192.168.1.20 rport 46154 generation 0 ufrag EsAw network-cost 999"
    ),
    "sdpMid": "0",
    "sdpMLineIndex": 0,
    "usernameFragment": "EsAw",
}
SDP = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=setup:actpass\r\n"
    "a=mid:0\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n"
)
MESSAGE_ITEM = {"id": 41, "author": "agent", "name": "Ada", "text": "Hello!", "at": 1716800000.5}
CONVERSATION_ITEM = {"id": 7, "visitor": "Visitor 7", "agent": None, "unread": 2}

# One valid example per message type, naming EVERY field the type declares.
EXAMPLES = {
    "handshake": {"versions": ["1"], "role": "sharer", "token": "vs-9f8e7d", "resume": "r-0a1b"},
    "welcome": {
        "version": "1",
        "role": "agent",
        "conn": "c-3f2a",
        "ice_servers": [{"urls": ["stun:stun.example.org:3478"]}],
        "info": {"name": "Ada", "agent": 1},
    },
    "ping": {"t": 1716800000.25},
    "pong": {"t": 1716800000.25},
    "error": {"code": "forbidden", "text": "not your share", "ref": "share_watch", "fatal": True},
    "visitor_info": {
        "page": "https://shop.example.com/cart?step=2",
        "user_agent": UA_CHROME,
        "can_share": False,
        "share_reason": "Mobile browsers cannot share their screen (Android).",
    },
    "chat_send": {"conversation": 7, "text": "Hi, I need help", "client_id": "m-1"},
    "chat": {"conversation": 7, "message": MESSAGE_ITEM},
    "history": {"conversation": 7, "messages": [MESSAGE_ITEM, MESSAGE_ITEM]},
    "conversations": {"items": [CONVERSATION_ITEM]},
    "conversation_update": {"item": CONVERSATION_ITEM},
    "conversation_take": {"conversation": 7},
    "conversation_open": {"conversation": 7},
    "visitor": {"conversation": 7, "record": {"browser": "Chrome 124", "os": "Windows"}},
    "share_request": {"conversation": 7},
    "share_invite": {
        "share": "s-5b1c",
        "conversation": 7,
        "agent_name": "Ada",
        "popup_url": "https://coview.example.com/share#share=s-5b1c&t=Zm9vYmFy",
        "expires_in": 120.0,
    },
    "share_accept": {"share": "s-5b1c"},
    "share_decline": {"share": "s-5b1c"},
    "share_watch": {"share": "s-5b1c", "pc": "s-5b1c.c-3f2a"},
    "share_media": {"share": "s-5b1c", "surface": "window"},
    "share_pick_failed": {"share": "s-5b1c", "reason": "cancelled"},
    "share_stop": {"share": "s-5b1c"},
    "share_path": {"share": "s-5b1c", "path": "turn"},
    "share_state": {
        "share": "s-5b1c",
        "conversation": 7,
        "state": "ended",
        "reason": "stopped_by_viewer",
        "surface": "monitor",
        "path": "direct",
        "note": "The agent stopped viewing.",
        "colleague": 3,
        "away": ["sharer"],
    },
    "colleague_share_request": {"agent": 3},
    "conversation_transfer": {"conversation": 7, "agent": 3},
    "permissions": {"screen_share": False, "reason": "An administrator turned it off."},
    "phone_share_start": {"conversation": 7},
    "phone_share_key": {"share": "s-5b1c", "conversation": 7, "key": "042917", "expires_in": 300.0},
    "peer": {
        "share": "s-5b1c",
        "pc": "pc-1",
        "role": "offerer",
        "ice_servers": [{"urls": ["stun:127.0.0.1:3478"]}],
        "via": "relay",
    },
    "peer_gone": {"share": "s-5b1c", "pc": "pc-1"},
    "peer_status": {"pc": "pc-1", "state": "connected"},
    "peer_ice": {"pc": "pc-1", "ice_servers": [{"urls": ["turn:127.0.0.1:3478"]}]},
    "offer": {"pc": "pc-1", "sdp": SDP},
    "answer": {"pc": "pc-1", "sdp": SDP.replace("actpass", "active")},
    "ice": {"pc": "pc-1", "candidate": CANDIDATE},
    "restart": {"pc": "pc-1"},
}

TYPES = sorted(MESSAGES)


def directions(mtype):
    allowed = MESSAGES[mtype][0]
    return [C2S, S2C] if allowed == BOTH else [allowed]


def other(direction):
    return S2C if direction == C2S else C2S


def example(mtype, **changes):
    msg = {"type": mtype}
    msg.update(EXAMPLES[mtype])
    msg.update(changes)
    return msg


def without(mtype, field):
    msg = example(mtype)
    del msg[field]
    return msg


def roundtrip(msg, direction):
    return decode(encode(msg), direction)


def code_of(text, direction=C2S):
    with pytest.raises(ProtocolError) as info:
        decode(text, direction)
    return info.value.code


def rejected(msg, direction):
    with pytest.raises(ProtocolError) as info:
        roundtrip(msg, direction)
    return info.value


# -- the examples table itself ------------------------------------------------------------


def test_examples_cover_every_message_type():
    assert set(EXAMPLES) == set(MESSAGES)


@pytest.mark.parametrize("mtype", TYPES)
def test_examples_name_every_field(mtype):
    assert set(EXAMPLES[mtype]) == set(MESSAGES[mtype][1])


def test_every_message_has_a_known_direction_and_well_formed_fields():
    kinds = (protocol.STR, protocol.INT, protocol.NUM, protocol.BOOL)
    kinds += (protocol.LIST, protocol.DICT, protocol.CANDIDATE)
    for mtype, (direction, fields) in MESSAGES.items():
        assert direction in (C2S, S2C, BOTH), mtype
        assert "type" not in fields, mtype
        for name, (kind, required, max_len, choices, nullable) in fields.items():
            assert kind in kinds, (mtype, name)
            assert isinstance(required, bool) and isinstance(nullable, bool)
            assert max_len is None or (isinstance(max_len, int) and max_len > 0)
            assert choices is None or (kind == protocol.STR and len(choices) > 0)


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("mtype", TYPES)
def test_every_type_round_trips_through_make_encode_decode(mtype):
    msg = make(mtype, **EXAMPLES[mtype])
    assert msg == example(mtype)
    text = encode(msg)
    assert isinstance(text, str)
    for direction in directions(mtype):
        assert decode(text, direction) == msg
        assert decode(text.encode("utf-8"), direction) == msg
        assert validate(json.loads(text), direction) == msg


@pytest.mark.parametrize("mtype", TYPES)
def test_only_required_fields_is_enough(mtype):
    fields = MESSAGES[mtype][1]
    minimal = {name: EXAMPLES[mtype][name] for name in fields if fields[name][1]}
    msg = make(mtype, **minimal)
    for direction in directions(mtype):
        assert roundtrip(msg, direction) == msg


def test_make_drops_optional_fields_left_as_none():
    assert make("ping", t=None) == {"type": "ping"}
    assert make("share_state", share="s", conversation=1, state="live", reason=None) == {
        "type": "share_state",
        "share": "s",
        "conversation": 1,
        "state": "live",
    }


def test_make_keeps_a_null_candidate_which_ends_the_candidates():
    msg = make("ice", pc="pc-1", candidate=None)
    assert msg == {"type": "ice", "pc": "pc-1", "candidate": None}
    for direction in (C2S, S2C):
        assert roundtrip(msg, direction) == msg


def test_encode_is_plain_json():
    msg = make("chat_send", text="h\u00e9llo \u2603 \U0001f600", client_id="m", conversation=3)
    assert json.loads(encode(msg)) == msg


def test_error_helper_builds_valid_errors_for_every_code():
    assert protocol.error("bad_json", "nope") == {
        "type": "error",
        "code": "bad_json",
        "text": "nope",
    }
    assert protocol.error("used", "token used", ref="handshake", fatal=True) == {
        "type": "error",
        "code": "used",
        "text": "token used",
        "ref": "handshake",
        "fatal": True,
    }
    assert "fatal" not in protocol.error("forbidden", "x", fatal=False)
    for code in ERROR_CODES:
        msg = protocol.error(code, "because", fatal=True)
        assert roundtrip(msg, S2C) == msg


def test_error_codes_are_unique_short_identifiers():
    assert len(set(ERROR_CODES)) == len(ERROR_CODES)
    for code in ERROR_CODES:
        assert code and len(code) <= 64
        assert set(code) <= set(string.ascii_lowercase + "_")


def test_protocol_error_carries_code_text_and_ref():
    err = ProtocolError("bad_field", "field 'x' must be str", "ping")
    assert (err.code, err.text, err.ref) == ("bad_field", "field 'x' must be str", "ping")
    assert str(err) == "bad_field: field 'x' must be str"
    assert isinstance(err, Exception)
    assert ProtocolError("bad_json", "x").ref is None


def test_version_constants():
    assert protocol.PROTOCOL_VERSION in protocol.SUPPORTED_VERSIONS
    assert MAX_MESSAGE_BYTES == 64 * 1024


# -- direction ----------------------------------------------------------------------------


@pytest.mark.parametrize("mtype", TYPES)
def test_wrong_direction(mtype):
    allowed = MESSAGES[mtype][0]
    if allowed == BOTH:
        for direction in (C2S, S2C):
            assert roundtrip(example(mtype), direction)["type"] == mtype
        return
    err = rejected(example(mtype), other(allowed))
    assert err.code == WRONG_DIRECTION
    assert err.ref == mtype


def test_client_may_not_send_server_messages():
    for mtype in ("welcome", "error", "chat", "share_invite", "share_state", "peer"):
        assert code_of(encode(example(mtype)), C2S) == WRONG_DIRECTION
    for mtype in ("handshake", "chat_send", "share_request", "share_media", "share_watch"):
        assert code_of(encode(example(mtype)), S2C) == WRONG_DIRECTION


# -- required fields, types, lengths, choices, nulls ---------------------------------------


REQUIRED = [
    (mtype, name) for mtype in TYPES for name, spec in sorted(MESSAGES[mtype][1].items()) if spec[1]
]
OPTIONAL = [
    (mtype, name)
    for mtype in TYPES
    for name, spec in sorted(MESSAGES[mtype][1].items())
    if not spec[1]
]


@pytest.mark.parametrize(("mtype", "field"), REQUIRED)
def test_missing_required_field_is_bad_field(mtype, field):
    for direction in directions(mtype):
        err = rejected(without(mtype, field), direction)
        assert err.code == BAD_FIELD
        assert err.ref == mtype
        assert field in err.text


@pytest.mark.parametrize(("mtype", "field"), OPTIONAL)
def test_missing_optional_field_is_fine(mtype, field):
    for direction in directions(mtype):
        assert roundtrip(without(mtype, field), direction) == without(mtype, field)


SAMPLES = ["text", "", "7", 0, 7, -3, 2.5, True, False, [], ["x"], {}, {"a": 1}]


def is_kind(kind, value):
    """Independent of protocol._kind_ok: the exact JSON types each kind accepts."""
    return {
        protocol.STR: type(value) is str,
        protocol.INT: type(value) is int,
        protocol.NUM: type(value) in (int, float),
        protocol.BOOL: type(value) is bool,
        protocol.LIST: type(value) is list,
        protocol.DICT: type(value) is dict,
        protocol.CANDIDATE: type(value) is dict,
    }[kind]


WRONG_TYPES = [
    (mtype, name, value)
    for mtype in TYPES
    for name, spec in sorted(MESSAGES[mtype][1].items())
    for value in SAMPLES
    if not is_kind(spec[0], value)
]


@pytest.mark.parametrize(("mtype", "field", "value"), WRONG_TYPES)
def test_wrong_field_type_is_bad_field(mtype, field, value):
    for direction in directions(mtype):
        err = rejected(example(mtype, **{field: value}), direction)
        assert err.code == BAD_FIELD
        assert err.ref == mtype


def test_bool_is_not_an_int_and_int_is_not_a_str():
    assert rejected(example("share_request", conversation=True), C2S).code == BAD_FIELD
    assert rejected(example("chat_send", conversation=False), C2S).code == BAD_FIELD
    assert rejected(example("ping", t=True), C2S).code == BAD_FIELD
    assert rejected(example("share_invite", expires_in=False), S2C).code == BAD_FIELD
    assert rejected(example("share_watch", share=5), C2S).code == BAD_FIELD
    assert rejected(example("offer", pc=1), C2S).code == BAD_FIELD
    assert rejected(example("share_request", conversation="7"), C2S).code == BAD_FIELD
    assert rejected(example("share_request", conversation=7.0), C2S).code == BAD_FIELD
    assert rejected(example("visitor_info", can_share=1), C2S).code == BAD_FIELD
    assert rejected(example("visitor_info", can_share="true"), C2S).code == BAD_FIELD
    # Numbers may be ints or floats.
    assert roundtrip(example("ping", t=3), C2S)["t"] == 3
    assert roundtrip(example("share_invite", expires_in=60), S2C)["expires_in"] == 60


LIMITED = [
    (mtype, name, spec[0], spec[2])
    for mtype in TYPES
    for name, spec in sorted(MESSAGES[mtype][1].items())
    if spec[2] is not None
]


def of_length(kind, n):
    return "x" * n if kind == protocol.STR else [0] * n


@pytest.mark.parametrize(("mtype", "field", "kind", "max_len"), LIMITED)
def test_over_long_strings_and_lists_are_bad_field(mtype, field, kind, max_len):
    for direction in directions(mtype):
        at_limit = example(mtype, **{field: of_length(kind, max_len)})
        assert roundtrip(at_limit, direction) == at_limit
        err = rejected(example(mtype, **{field: of_length(kind, max_len + 1)}), direction)
        assert err.code == BAD_FIELD
        assert field in err.text


def test_string_limits_count_characters_not_bytes():
    text = "\u00e9" * 4000  # 8000 UTF-8 bytes, 4000 characters: within chat's limit
    assert roundtrip(example("chat_send", text=text), C2S)["text"] == text
    assert rejected(example("chat_send", text=text + "\u00e9"), C2S).code == BAD_FIELD


def test_every_string_field_without_choices_is_bounded():
    # An unbounded string would only be stopped by the 64 KiB cap.
    for mtype, (_, fields) in MESSAGES.items():
        for name, (kind, _req, max_len, choices, _null) in fields.items():
            if kind in (protocol.STR, protocol.LIST):
                assert max_len is not None or choices is not None, (mtype, name)


CHOICES = [
    (mtype, name, spec[3])
    for mtype in TYPES
    for name, spec in sorted(MESSAGES[mtype][1].items())
    if spec[3] is not None
]


@pytest.mark.parametrize(("mtype", "field", "choices"), CHOICES)
def test_choices_are_enforced(mtype, field, choices):
    for direction in directions(mtype):
        for choice in choices:
            msg = example(mtype, **{field: choice})
            assert roundtrip(msg, direction)[field] == choice
        for bad in ("", "nope", choices[0].upper(), choices[0] + " ", " " + choices[0]):
            err = rejected(example(mtype, **{field: bad}), direction)
            assert err.code == BAD_FIELD
            assert field in err.text


def test_the_choices_are_the_documented_ones():
    spec = MESSAGES["handshake"][1]["role"]
    assert spec[3] == ("agent", "visitor", "sharer")
    assert MESSAGES["share_media"][1]["surface"][3] == ("monitor", "window", "browser", "unknown")
    assert MESSAGES["share_path"][1]["path"][3] == ("direct", "turn", "relay", "unknown")
    assert MESSAGES["peer"][1]["role"][3] == ("offerer", "answerer")
    assert MESSAGES["share_pick_failed"][1]["reason"][3] == ("cancelled", "unsupported", "error")


NULLS = [
    (mtype, name, spec[1], spec[4])
    for mtype in TYPES
    for name, spec in sorted(MESSAGES[mtype][1].items())
]


@pytest.mark.parametrize(("mtype", "field", "required", "nullable"), NULLS)
def test_null_rules(mtype, field, required, nullable):
    """Null is refused for a required field unless it is nullable; for an optional field
    null means the same as leaving the field out."""
    msg = example(mtype, **{field: None})
    for direction in directions(mtype):
        if required and not nullable:
            err = rejected(msg, direction)
            assert err.code == BAD_FIELD
            assert "null" in err.text
        else:
            assert roundtrip(msg, direction) == msg


def test_nullable_fields_are_the_expected_ones():
    nullable = sorted(
        (mtype, name)
        for mtype, (_, fields) in MESSAGES.items()
        for name, spec in fields.items()
        if spec[4]
    )
    assert nullable == [
        ("ice", "candidate"),
        ("permissions", "reason"),
        ("share_state", "colleague"),
        ("share_state", "note"),
        ("share_state", "path"),
        ("share_state", "reason"),
        ("share_state", "surface"),
        ("visitor_info", "share_reason"),
    ]
    # The end-of-candidates marker is the one required nullable field.
    assert MESSAGES["ice"][1]["candidate"][1] is True


# -- type field, unknown types, extra fields ------------------------------------------------


def test_unknown_type():
    assert code_of('{"type": "share_everything"}') == UNKNOWN_TYPE
    assert code_of('{"type": ""}') == UNKNOWN_TYPE
    assert code_of('{"type": "PING"}') == UNKNOWN_TYPE
    assert code_of('{"type": "' + "z" * 5000 + '"}', S2C) == UNKNOWN_TYPE
    err = pytest.raises(ProtocolError, decode, '{"type": "' + "z" * 5000 + '"}', C2S).value
    assert len(err.text) < 200  # the echoed name is cut short


def test_type_must_be_a_string():
    for raw in ("{}", '{"type": null}', '{"type": 1}', '{"type": ["ping"]}', '{"type": true}'):
        assert code_of(raw) == BAD_FIELD


def test_unknown_extra_fields_are_ignored():
    for mtype in TYPES:
        msg = example(mtype, future_field={"nested": [1, 2, 3]}, x=None)
        for direction in directions(mtype):
            assert roundtrip(msg, direction)["type"] == mtype


# -- frames that are not messages -------------------------------------------------------------


@pytest.mark.parametrize("raw", ["[]", '[{"type": "ping"}]', "1", "-2.5", '"ping"', "null", "true"])
def test_non_object_json(raw):
    assert code_of(raw) == NOT_OBJECT
    assert code_of(raw.encode("utf-8"), S2C) == NOT_OBJECT


def test_validate_rejects_non_dicts_directly():
    for value in (None, [], "ping", 3, ("type", "ping")):
        with pytest.raises(ProtocolError) as info:
            validate(value, C2S)
        assert info.value.code == NOT_OBJECT


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "{",
        "}",
        '{"type": "ping"',
        '{"type": "ping",}',
        "{'type': 'ping'}",
        '{"type": "ping"} {"type": "ping"}',
        '{"type": "ping"} x',
        "ping",
        '{type: "ping"}',
        '{"type": "ping", "t": 01}',
        '{"type": "ping\\x"}',
        "\x00",
    ],
)
def test_malformed_json(raw):
    assert code_of(raw) == BAD_JSON
    assert code_of(raw.encode("utf-8")) == BAD_JSON


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe{}",
        b'{"type": "ping", "x": "\xc3"}',
        b'{"type": "ping", "x": "\xc0\xaf"}',  # overlong "/"
        b'{"type": "ping", "x": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"type": "ping", "x": "\xf4\x90\x80\x80"}',  # beyond U+10FFFF
        b"\x80",
    ],
)
def test_invalid_utf8_bytes(raw):
    assert code_of(raw) == BAD_JSON


def test_text_with_lone_surrogates_is_bad_json_not_a_crash():
    # A JS string can hold a lone surrogate; it has no UTF-8 form (was UnicodeEncodeError).
    assert code_of('{"type": "ping", "x": "\ud800"}') == BAD_JSON
    assert code_of("\udfff") == BAD_JSON
    # An escaped surrogate inside valid JSON text is fine: the text itself is UTF-8.
    assert decode('{"type": "ping", "x": "\\ud800"}', C2S)["x"] == "\ud800"


def test_deep_nesting_is_bad_json_never_a_crash():
    depth = 30000
    assert len("[" * depth) < MAX_MESSAGE_BYTES
    assert code_of("[" * depth) == BAD_JSON
    assert code_of(("[" * depth).encode("ascii")) == BAD_JSON
    assert code_of('{"a":' * 12000) == BAD_JSON
    assert code_of('{"type": "ping", "x": ' + "[" * depth) == BAD_JSON
    # Closed nesting is valid JSON; CPython's parser refuses the depth.  Either way the
    # answer is a ProtocolError, never a RecursionError.
    closed = '{"type": "ping", "x": ' + "[" * depth + "]" * depth + "}"
    assert len(closed) < MAX_MESSAGE_BYTES
    try:
        assert decode(closed, C2S)["type"] == "ping"
    except ProtocolError as err:
        assert err.code == BAD_JSON
    # The parser is still healthy afterwards.
    assert decode('{"type": "ping"}', C2S) == {"type": "ping"}


def test_nesting_is_bounded_before_parsing_at_the_documented_depth():
    # The frame's own object is level 1; Pyodide's json.loads would overflow the JS stack
    # long before CPython's parser refused, so decode refuses past MAX_DEPTH first.
    def ping(depth):
        return '{"type": "ping", "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"

    assert decode(ping(protocol.MAX_DEPTH), C2S)["type"] == "ping"
    assert code_of(ping(protocol.MAX_DEPTH + 1)) == BAD_JSON
    assert code_of(ping(protocol.MAX_DEPTH + 1).encode("ascii")) == BAD_JSON
    objects = '{"a":' * protocol.MAX_DEPTH + "1" + "}" * protocol.MAX_DEPTH
    assert code_of('{"type": "ping", "x": ' + objects + "}") == BAD_JSON
    # Brackets in strings (escaped quotes and backslashes too) and siblings do not nest.
    wide = '{"type": "ping", "x": [' + ",".join(["[]"] * 5000) + "]}"
    assert decode(wide, C2S)["type"] == "ping"
    quoted = '{"type": "ping", "x": "\\\\\\"' + "[{" * 5000 + '", "y": "\\\\"}'
    assert decode(quoted, C2S)["x"].endswith("[{")


@pytest.mark.parametrize(
    ("raw", "utf8"),
    [
        (b"plain", True),
        ("\u00e9\u0800\ud7ff\ue000\uffff\U00010000\U0010ffff".encode("utf-8"), True),
        (b"\xc0\xaf", False),  # overlong
        (b"\xc1\xbf", False),
        (b"\xe0\x9f\xbf", False),
        (b"\xe0\xa0\x80", True),
        (b"\xed\x9f\xbf", True),
        (b"\xed\xa0\x80", False),  # surrogates
        (b"\xed\xbf\xbf", False),
        (b"\xf0\x8f\xbf\xbf", False),  # overlong
        (b"\xf0\x90\x80\x80", True),
        (b"\xf4\x8f\xbf\xbf", True),
        (b"\xf4\x90\x80\x80", False),  # past U+10FFFF
        (b"\xf5\x80\x80\x80", False),
    ],
)
def test_the_utf8_check_for_lax_decoders(raw, utf8):
    # On MicroPython decode runs protocol._utf8_ok after its lax bytes.decode (which checks
    # the structure: lead and continuation bytes); the verdicts are CPython's decoder's.
    assert protocol._utf8_ok(raw) == utf8
    try:
        raw.decode("utf-8")
    except UnicodeError:
        assert not utf8
    frame = b'{"type": "ping", "x": "' + raw + b'"}'
    if utf8:
        assert decode(frame, C2S)["type"] == "ping"
    else:
        assert code_of(frame) == BAD_JSON


# -- the 64 KiB cap ---------------------------------------------------------------------------


def padded(pad):
    return '{"type": "ping", "pad": "' + pad + '"}'


def fill(size, unit="x"):
    """A valid ping frame of exactly ``size`` UTF-8 bytes, padded with ``unit``."""
    room = size - len(padded("").encode("utf-8"))
    width = len(unit.encode("utf-8"))
    pad = unit * (room // width) + "x" * (room % width)
    text = padded(pad)
    assert len(text.encode("utf-8")) == size
    return text


@pytest.mark.parametrize("unit", ["x", "\u00e9", "\u20ac", "\U0001f600"])
def test_size_cap_is_measured_in_utf8_bytes(unit):
    at_cap = fill(MAX_MESSAGE_BYTES, unit)
    assert decode(at_cap, C2S)["type"] == "ping"
    assert decode(at_cap.encode("utf-8"), C2S)["type"] == "ping"
    over = fill(MAX_MESSAGE_BYTES + 1, unit)
    assert code_of(over) == TOO_LARGE
    assert code_of(over.encode("utf-8")) == TOO_LARGE


def test_multibyte_text_under_the_character_count_but_over_in_bytes_is_too_large():
    text = padded("\u00e9" * 40000)  # ~40 000 characters, ~80 000 bytes
    assert len(text) < MAX_MESSAGE_BYTES < len(text.encode("utf-8"))
    assert code_of(text) == TOO_LARGE
    assert code_of(text.encode("utf-8")) == TOO_LARGE
    emoji = padded("\U0001f600" * 17000)  # 4 bytes each
    assert len(emoji) < MAX_MESSAGE_BYTES < len(emoji.encode("utf-8"))
    assert code_of(emoji) == TOO_LARGE


def test_size_cap_comes_before_parsing():
    assert code_of("[" * (MAX_MESSAGE_BYTES + 1)) == TOO_LARGE
    assert code_of(b"\xff" * (MAX_MESSAGE_BYTES + 1)) == TOO_LARGE
    assert code_of("x" * 10_000_000) == TOO_LARGE


# -- ICE candidate sub-validation -------------------------------------------------------------


def ice(candidate):
    return {"type": "ice", "pc": "pc-1", "candidate": candidate}


@pytest.mark.parametrize(
    "candidate",
    [
        CANDIDATE,
        {"candidate": ""},  # end of candidates for one generation
        {"candidate": "candidate:1 1 udp 2122260223 10.0.0.2 5000 typ host", "sdpMid": None},
        {"candidate": "c", "sdpMLineIndex": None, "usernameFragment": None},
        {"candidate": "c" * 1024, "sdpMid": "m" * 64, "sdpMLineIndex": 64},
        {"candidate": "c", "usernameFragment": "u" * 256, "future": [1]},
    ],
)
def test_valid_candidates(candidate):
    for direction in (C2S, S2C):
        assert roundtrip(ice(candidate), direction)["candidate"] == candidate


@pytest.mark.parametrize(
    "candidate",
    [
        {},
        {"sdpMid": "0"},
        {"candidate": None},
        {"candidate": 5},
        {"candidate": "c" * 1025},
        {"candidate": "c", "sdpMid": 0},
        {"candidate": "c", "sdpMid": "m" * 65},
        {"candidate": "c", "sdpMLineIndex": "0"},
        {"candidate": "c", "sdpMLineIndex": True},
        {"candidate": "c", "sdpMLineIndex": -1},
        {"candidate": "c", "sdpMLineIndex": 65},
        {"candidate": "c", "sdpMLineIndex": 0.5},
        {"candidate": "c", "usernameFragment": 1},
        {"candidate": "c", "usernameFragment": "u" * 257},
    ],
)
def test_bad_candidates(candidate):
    for direction in (C2S, S2C):
        err = rejected(ice(candidate), direction)
        assert err.code == BAD_FIELD
        assert err.ref == "ice"
        assert "candidate" in err.text


def test_candidate_must_be_an_object_or_null():
    for value in ("candidate:1 1 udp 1 10.0.0.2 5000 typ host", 0, [], True):
        assert rejected(ice(value), C2S).code == BAD_FIELD
    assert roundtrip(ice(None), C2S)["candidate"] is None


# -- properties -------------------------------------------------------------------------------


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
finite_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELD_NAMES = sorted({name for _, fields in MESSAGES.values() for name in fields})
message_like = st.builds(
    lambda mtype, fields: dict(fields, type=mtype),
    st.sampled_from(TYPES) | json_values,
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values, max_size=6),
)
any_text = st.text() | st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=30)


def check_outcome(frame, direction):
    try:
        msg = decode(frame, direction)
    except ProtocolError as err:
        assert err.code in ERROR_CODES
        assert isinstance(err.text, str)
        return None
    assert isinstance(msg, dict)
    assert msg["type"] in MESSAGES
    assert MESSAGES[msg["type"]][0] in (direction, BOTH)
    return msg


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values | message_like, direction=st.sampled_from([C2S, S2C]))
def test_any_json_value_decodes_to_a_message_or_a_protocol_error(value, direction):
    text = json.dumps(value)
    check_outcome(text, direction)
    check_outcome(text.encode("utf-8"), direction)


@settings(max_examples=300)
@given(frame=any_text | st.binary(), direction=st.sampled_from([C2S, S2C]))
def test_any_text_or_bytes_decodes_to_a_message_or_a_protocol_error(frame, direction):
    check_outcome(frame, direction)


def field_value(spec):
    kind, _required, max_len, choices, nullable = spec
    if choices is not None:
        out = st.sampled_from(choices)
    elif kind == protocol.STR:
        out = st.text(max_size=min(max_len or 40, 40))
    elif kind == protocol.INT:
        out = st.integers(min_value=0, max_value=2**53 - 1)
    elif kind == protocol.NUM:
        out = st.integers(min_value=-(2**31), max_value=2**31) | st.floats(
            allow_nan=False, allow_infinity=False
        )
    elif kind == protocol.BOOL:
        out = st.booleans()
    elif kind == protocol.LIST:
        out = st.lists(finite_values, max_size=min(max_len or 4, 4))
    elif kind == protocol.DICT:
        out = st.dictionaries(st.text(max_size=8), finite_values, max_size=4)
    else:
        out = st.fixed_dictionaries(
            {"candidate": st.text(max_size=100)},
            optional={
                "sdpMid": st.none() | st.text(max_size=64),
                "sdpMLineIndex": st.none() | st.integers(0, 64),
                "usernameFragment": st.none() | st.text(max_size=256),
            },
        )
    return (st.none() | out) if nullable else out


@st.composite
def valid_messages(draw):
    mtype = draw(st.sampled_from(TYPES))
    fields = MESSAGES[mtype][1]
    msg = {"type": mtype}
    for name in sorted(fields):
        if fields[name][1] or draw(st.booleans()):
            msg[name] = draw(field_value(fields[name]))
    return msg


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(msg=valid_messages())
def test_valid_messages_round_trip(msg):
    for direction in directions(msg["type"]):
        assert roundtrip(msg, direction) == msg
        assert decode(encode(msg).encode("utf-8"), direction) == msg


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "share_request", "conversation": 9007199254740992}',
        '{"type": "share_request", "conversation": -9007199254740992}',
    ],
)
def test_numbers_outside_what_json_and_js_carry_are_refused(text):
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode(text, protocol.C2S)
    assert info.value.code == protocol.BAD_FIELD


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "ping", "t": NaN}',
        '{"type": "ping", "t": Infinity}',
        '{"type": "ping", "t": -Infinity}',
    ],
)
def test_nan_and_infinity_are_not_json(text):
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode(text, protocol.C2S)
    assert info.value.code == protocol.BAD_JSON


def test_largest_exact_js_integer_is_accepted():
    msg = protocol.decode(
        '{"type": "share_request", "conversation": 9007199254740991}', protocol.C2S
    )
    assert msg["conversation"] == 2**53 - 1
