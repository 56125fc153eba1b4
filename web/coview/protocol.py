"""The Coview wire protocol: every message type, its fields, and the one JSON codec.

``docs/protocol.md`` is the human version of this table; a unit test keeps the two in step.
Server and browsers import this module, so a message that one side accepts the other
side accepts too.  Only this module touches JSON.
"""

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = "1"
SUPPORTED_VERSIONS = ("1",)
MAX_MESSAGE_BYTES = 65536
#: Arrays and objects in a frame nest at most this deep; the frame's own object counts as 1.
MAX_DEPTH = 64
MAX_INT = 2**53 - 1

# Directions a message may travel.
C2S = "c2s"
S2C = "s2c"
BOTH = "both"

# Stable, program-readable error codes (docs/protocol.md lists them with their meaning).
BAD_JSON = "bad_json"
TOO_LARGE = "too_large"
NOT_OBJECT = "not_object"
UNKNOWN_TYPE = "unknown_type"
BAD_FIELD = "bad_field"
WRONG_DIRECTION = "wrong_direction"
HANDSHAKE_REQUIRED = "handshake_required"
UNSUPPORTED_VERSION = "unsupported_version"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
OUT_OF_ORDER = "out_of_order"
CONFLICT = "conflict"
RATE_LIMITED = "rate_limited"
EXPIRED = "expired"
USED = "used"
ENDED = "ended"
UNSUPPORTED_BROWSER = "unsupported_browser"
INTERNAL = "internal"

ERROR_CODES = (
    BAD_JSON,
    TOO_LARGE,
    NOT_OBJECT,
    UNKNOWN_TYPE,
    BAD_FIELD,
    WRONG_DIRECTION,
    HANDSHAKE_REQUIRED,
    UNSUPPORTED_VERSION,
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    OUT_OF_ORDER,
    CONFLICT,
    RATE_LIMITED,
    EXPIRED,
    USED,
    ENDED,
    UNSUPPORTED_BROWSER,
    INTERNAL,
)

ROLES = ("agent", "visitor", "sharer")
SURFACES = ("monitor", "window", "browser", "unknown")
PATHS = ("direct", "turn", "relay", "unknown")
#: What an end reports of its peer connection: ICE connected, or given up after restarts.
PEER_STATES = ("connected", "failed")


class ProtocolError(Exception):
    """A message that cannot be accepted; ``code`` is stable, ``text`` is for people."""

    def __init__(self, code: str, text: str, ref: "str | None" = None) -> None:
        super().__init__(code + ": " + text)
        self.code = code
        self.text = text
        self.ref = ref


# Field kinds.
STR = "str"
INT = "int"
NUM = "num"
BOOL = "bool"
LIST = "list"
DICT = "dict"
CANDIDATE = "candidate"


def _f(
    kind: str,
    required: bool = True,
    max_len: "int | None" = None,
    choices: "tuple[str, ...] | None" = None,
    nullable: bool = False,
) -> "tuple[str, bool, int | None, tuple[str, ...] | None, bool]":
    return (kind, required, max_len, choices, nullable)


ID = _f(STR, max_len=64)
CONV = _f(INT)
SHARE = _f(STR, max_len=64)
PC = _f(STR, max_len=128)

# type -> (direction, {field: spec}).  Unknown fields are ignored (forward compatibility);
# missing, mistyped or oversized known fields are rejected with ``bad_field``.
MESSAGES: "dict[str, tuple[str, dict[str, Any]]]" = {
    # Session set-up and liveness.
    "handshake": (
        C2S,
        {
            "versions": _f(LIST, max_len=8),
            "role": _f(STR, choices=ROLES),
            "token": _f(STR, required=False, max_len=256),
            "resume": _f(STR, required=False, max_len=64),
        },
    ),
    "welcome": (
        S2C,
        {
            "version": _f(STR, max_len=8),
            "role": _f(STR, choices=ROLES),
            "conn": ID,
            "ice_servers": _f(LIST, max_len=16),
            "info": _f(DICT),
        },
    ),
    "ping": (BOTH, {"t": _f(NUM, required=False)}),
    "pong": (BOTH, {"t": _f(NUM, required=False)}),
    "error": (
        S2C,
        {
            "code": _f(STR, max_len=64),
            "text": _f(STR, max_len=1024),
            "ref": _f(STR, required=False, max_len=64),
            "fatal": _f(BOOL, required=False),
        },
    ),
    # Visitor record and chat.
    "visitor_info": (
        C2S,
        {
            "page": _f(STR, max_len=2048),
            "user_agent": _f(STR, max_len=1024),
            "can_share": _f(BOOL),
            "share_reason": _f(STR, required=False, max_len=256, nullable=True),
        },
    ),
    "chat_send": (
        C2S,
        {
            "conversation": _f(INT, required=False),
            "text": _f(STR, max_len=4000),
            "client_id": _f(STR, max_len=64),
        },
    ),
    "chat": (S2C, {"conversation": CONV, "message": _f(DICT)}),
    "history": (S2C, {"conversation": CONV, "messages": _f(LIST, max_len=1000)}),
    "conversations": (S2C, {"items": _f(LIST, max_len=1000)}),
    "conversation_update": (S2C, {"item": _f(DICT)}),
    "conversation_take": (C2S, {"conversation": CONV}),
    "conversation_open": (C2S, {"conversation": CONV}),
    "conversation_transfer": (C2S, {"conversation": CONV, "agent": _f(INT)}),
    "visitor": (S2C, {"conversation": CONV, "record": _f(DICT)}),
    # What this agent may do now (per-agent permissions and company-wide switches).
    "permissions": (
        S2C,
        {"screen_share": _f(BOOL), "reason": _f(STR, required=False, max_len=256, nullable=True)},
    ),
    # Screen share lifecycle.
    "share_request": (C2S, {"conversation": CONV}),
    "share_invite": (
        S2C,
        {
            "share": SHARE,
            "conversation": CONV,
            "agent_name": _f(STR, max_len=128),
            "popup_url": _f(STR, max_len=512),
            "expires_in": _f(NUM),
        },
    ),
    "share_accept": (C2S, {"share": SHARE}),
    "share_decline": (C2S, {"share": SHARE}),
    "share_watch": (C2S, {"share": SHARE, "pc": _f(STR, required=False, max_len=128)}),
    "share_media": (C2S, {"share": SHARE, "surface": _f(STR, choices=SURFACES)}),
    "share_pick_failed": (
        C2S,
        {"share": SHARE, "reason": _f(STR, choices=("cancelled", "unsupported", "error"))},
    ),
    "share_stop": (C2S, {"share": SHARE}),
    "share_path": (C2S, {"share": SHARE, "path": _f(STR, choices=PATHS)}),
    "share_state": (
        S2C,
        {
            "share": SHARE,
            "conversation": CONV,
            "state": _f(STR, max_len=32),
            "reason": _f(STR, required=False, max_len=64, nullable=True),
            "surface": _f(STR, required=False, max_len=16, nullable=True),
            "path": _f(STR, required=False, max_len=16, nullable=True),
            "note": _f(STR, required=False, max_len=256, nullable=True),
            "colleague": _f(INT, required=False, nullable=True),
            "away": _f(LIST, required=False, max_len=2),
        },
    ),
    # An agent asks a colleague (another agent) to share their screen.
    "colleague_share_request": (C2S, {"agent": _f(INT)}),
    # A share for a caller on the phone, opened by a key the agent reads aloud.
    "phone_share_start": (C2S, {"conversation": _f(INT, required=False)}),
    "phone_share_key": (
        S2C,
        {"share": SHARE, "conversation": CONV, "key": _f(STR, max_len=16), "expires_in": _f(NUM)},
    ),
    # WebRTC negotiation, routed by peer-connection id.
    "peer": (
        S2C,
        {
            "share": SHARE,
            "pc": PC,
            "role": _f(STR, choices=("offerer", "answerer")),
            "ice_servers": _f(LIST, required=False, max_len=16),
            "via": _f(STR, required=False, choices=("direct", "relay")),
        },
    ),
    "peer_gone": (S2C, {"share": SHARE, "pc": PC}),
    "peer_ice": (S2C, {"pc": PC, "ice_servers": _f(LIST, max_len=16)}),
    "peer_status": (C2S, {"pc": PC, "state": _f(STR, choices=PEER_STATES)}),
    "offer": (BOTH, {"pc": PC, "sdp": _f(STR, max_len=60000)}),
    "answer": (BOTH, {"pc": PC, "sdp": _f(STR, max_len=60000)}),
    "ice": (BOTH, {"pc": PC, "candidate": _f(CANDIDATE, nullable=True)}),
    "restart": (BOTH, {"pc": PC}),
}


def _kind_ok(kind: str, value: "Any") -> bool:
    if kind == STR:
        return isinstance(value, str)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == INT:
        # Bounded to what a JS number holds exactly and a database column accepts.
        return (
            isinstance(value, int) and not isinstance(value, bool) and -MAX_INT <= value <= MAX_INT
        )
    if kind == NUM:
        # NaN and infinities parse in CPython but are not JSON: a browser could not read them back.
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value - value == 0  # false for NaN and both infinities
        )
    if kind == LIST:
        return isinstance(value, list)
    if kind == DICT or kind == CANDIDATE:
        return isinstance(value, dict)
    return False


def _check_candidate(value: "dict[str, Any]") -> "str | None":
    cand = value.get("candidate")
    if not isinstance(cand, str) or len(cand) > 1024:
        return "candidate.candidate must be a string of at most 1024 characters"
    mid = value.get("sdpMid")
    if mid is not None and (not isinstance(mid, str) or len(mid) > 64):
        return "candidate.sdpMid must be a short string or null"
    index = value.get("sdpMLineIndex")
    if index is not None and (
        not isinstance(index, int) or isinstance(index, bool) or index < 0 or index > 64
    ):
        return "candidate.sdpMLineIndex must be a small integer or null"
    ufrag = value.get("usernameFragment")
    if ufrag is not None and (not isinstance(ufrag, str) or len(ufrag) > 256):
        return "candidate.usernameFragment must be a short string or null"
    return None


def validate(msg: "Any", direction: str) -> "dict[str, Any]":
    """Check a decoded message against the table; return it or raise ProtocolError."""
    if not isinstance(msg, dict):
        raise ProtocolError(NOT_OBJECT, "a message must be a JSON object")
    mtype = msg.get("type")
    if not isinstance(mtype, str):
        raise ProtocolError(BAD_FIELD, "field 'type' must be a string")
    entry = MESSAGES.get(mtype)
    if entry is None:
        raise ProtocolError(UNKNOWN_TYPE, "unknown message type '" + mtype[:64] + "'")
    allowed, fields = entry
    if allowed != BOTH and allowed != direction:
        raise ProtocolError(
            WRONG_DIRECTION, "'" + mtype + "' may not be sent in this direction", mtype
        )
    for name in fields:
        kind, required, max_len, choices, nullable = fields[name]
        if name not in msg:
            if required:
                raise ProtocolError(BAD_FIELD, "'" + mtype + "' needs field '" + name + "'", mtype)
            continue
        value = msg[name]
        if value is None:
            if nullable or not required:
                continue
            raise ProtocolError(BAD_FIELD, "field '" + name + "' may not be null", mtype)
        if not _kind_ok(kind, value):
            raise ProtocolError(
                BAD_FIELD, "field '" + name + "' of '" + mtype + "' must be " + kind, mtype
            )
        if max_len is not None and len(value) > max_len:
            raise ProtocolError(
                BAD_FIELD,
                "field '" + name + "' is longer than " + str(max_len),
                mtype,
            )
        if choices is not None and value not in choices:
            raise ProtocolError(
                BAD_FIELD,
                "field '" + name + "' must be one of " + ", ".join(choices),
                mtype,
            )
        if kind == CANDIDATE:
            problem = _check_candidate(value)
            if problem is not None:
                raise ProtocolError(BAD_FIELD, problem, mtype)
    return msg


def decode(text: "str | bytes", direction: str) -> "dict[str, Any]":
    """Parse and validate one frame; every failure is a ProtocolError, never a crash.

    Nesting is bounded before any parser sees the frame (a deep frame overflows Pyodide's JS
    stack inside json.loads), and where the interpreter's UTF-8 decoder is laxer than
    CPython's (MicroPython) the bytes are checked here first.  MicroPython's json.loads is
    laxer than CPython's too (trailing commas, leading zeros, unknown escapes): not checked
    here, as no check of the whole grammar in Python is cheap enough there.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_MESSAGE_BYTES:
            raise ProtocolError(TOO_LARGE, "message larger than " + str(MAX_MESSAGE_BYTES))
        raw = text
        try:
            text = raw.decode("utf-8")
        except Exception:
            raise ProtocolError(BAD_JSON, "message is not UTF-8") from None
    elif len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError(TOO_LARGE, "message larger than " + str(MAX_MESSAGE_BYTES) + " bytes")
    else:
        try:
            raw = text.encode("utf-8")
        except Exception:  # a str holding lone surrogates (JS strings may) has no UTF-8 form
            raise ProtocolError(BAD_JSON, "message is not UTF-8") from None
        if len(raw) > MAX_MESSAGE_BYTES:
            raise ProtocolError(
                TOO_LARGE, "message larger than " + str(MAX_MESSAGE_BYTES) + " bytes"
            )
    if _LAX_UTF8 and len(raw) != len(text) and not _utf8_ok(raw):
        raise ProtocolError(BAD_JSON, "message is not UTF-8")
    if not _shallow(raw):
        raise ProtocolError(BAD_JSON, "message nests deeper than " + str(MAX_DEPTH))
    try:
        msg = _loads(text)
    except Exception:  # ValueError, RecursionError (CPython), RuntimeError (MicroPython)
        raise ProtocolError(BAD_JSON, "message is not valid JSON") from None
    return validate(msg, direction)


def _shallow(raw: bytes) -> bool:
    """No array or object nests deeper than MAX_DEPTH (the frame's own object counts as 1).

    Gated so that a frame pays only for what it holds: fewer brackets than the limit in all
    (nearly every frame) costs two counts; then brackets inside strings are set aside; only a
    frame with more than MAX_DEPTH brackets outside strings is walked, closer by closer.
    Never refuses valid JSON of allowed depth; what it lets through nests no deeper than
    allowed as far as any parser reads it (invalid text is refused later, by the parser).
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return True
    if b"\\" in raw:  # escapes: a backslash pair, then an escaped quote, never end a string
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    parts = raw.split(b'"')
    if len(parts) % 2 == 0:  # an unterminated string: not JSON either way
        return True
    raw = b"".join(parts[::2])
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return True
    depth = 0
    for piece in raw.replace(b"{", b"[").replace(b"}", b"]").split(b"]"):
        depth += piece.count(b"[")  # deepest just before each closer (and at the very end)
        if depth > MAX_DEPTH:
            return False
        depth -= 1
    return True


def _accepts(func: "Any", *args: "Any") -> bool:
    try:
        func(*args)
    except Exception:
        return False
    return True


#: MicroPython's ``bytes.decode`` takes overlong forms, encoded surrogates and code points
#: past U+10FFFF (and its ``str.encode`` a str holding lone surrogates); CPython's does not.
_LAX_UTF8 = _accepts(str, b"\xed\xa0\x80", "utf-8")

# UTF-8 (RFC 3629) forbids these lead bytes outright (overlong C0/C1, past U+10FFFF F5-F7;
# F8-FF no decoder takes), and allows these lead bytes only before these second bytes
# (low <= byte < high): E0 A0-BF and F0 90-BF (shorter forms are overlong), ED 80-9F
# (ED A0-BF are surrogates), F4 80-8F (F4 90 and up are past U+10FFFF).
_UTF8_NEVER = (b"\xc0", b"\xc1", b"\xf5", b"\xf6", b"\xf7")
_UTF8_PAIRS = (
    (b"\xe0", 0xA0, 0xC0),
    (b"\xed", 0x80, 0xA0),
    (b"\xf0", 0x90, 0xC0),
    (b"\xf4", 0x80, 0x90),
)


def _utf8_ok(raw: bytes) -> bool:
    """What a lax decoder let through is strict UTF-8 too (its structure it does check).

    A scan per lead byte; only the lead bytes a frame holds are followed up, one step per
    occurrence (these leads are never continuation bytes, so each occurrence starts a
    character and is followed by at least one more byte).
    """
    for lead in _UTF8_NEVER:
        if lead in raw:
            return False
    for lead, low, high in _UTF8_PAIRS:
        if lead in raw:
            for after in raw.split(lead)[1:]:
                if not (after and low <= after[0] < high):
                    return False
    return True


def _not_json(name: str) -> "Any":
    raise ValueError(name + " is not JSON")


def _loads(text: str) -> "Any":
    """``json.loads`` that refuses NaN and Infinity, as JSON (and MicroPython) do.

    CPython takes those literals and would forward them in free-form fields to pages
    that cannot parse them back.  MicroPython's ``json.loads`` has no ``parse_constant``
    (a TypeError) and refuses the literals by itself.
    """
    try:
        return json.loads(text, parse_constant=_not_json)
    except TypeError:
        return json.loads(text)


def encode(msg: "dict[str, Any]") -> str:
    """Serialise a message; the caller builds it with :func:`make` so it is valid."""
    return json.dumps(msg)


def make(mtype: str, **fields: "Any") -> "dict[str, Any]":
    """Build a message, dropping fields left as None so optional fields stay absent.

    A required nullable field (``ice.candidate``: null ends the candidates) keeps its null.
    """
    msg: dict[str, Any] = {"type": mtype}
    entry = MESSAGES.get(mtype)
    specs = entry[1] if entry is not None else {}
    for key in fields:
        value = fields[key]
        spec = specs.get(key)
        if value is not None or (spec is not None and spec[1] and spec[4]):
            msg[key] = value
    return msg


def error(code: str, text: str, ref: "str | None" = None, fatal: bool = False) -> "dict[str, Any]":
    return make("error", code=code, text=text, ref=ref, fatal=True if fatal else None)
