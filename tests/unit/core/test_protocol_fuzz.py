"""Fuzzing the decoder: mutated valid messages of every type, byte-level damage, huge fields,
deep nesting, wrong types.

``decode`` must either return a message that obeys the ``MESSAGES`` table or raise
``ProtocolError`` with one of the codes documented for bad frames, and the error the server
would build from that refusal must itself be a valid message.  Each property is checked
against an oracle written from docs/protocol.md ("Messages", "Errors"), independently of
``validate``: for a mutated message the oracle says whether it is acceptable and, if not,
which code it deserves, so a mutation that slips through (or a good message refused) fails.

``COVIEW_FUZZ_EXAMPLES`` sets the examples per property (default 150); ``bench/fuzz.py``
runs these files with many more.
"""

from __future__ import annotations

import builtins
import json
import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from coview import protocol as P
from coview.protocol import (
    C2S,
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    MESSAGES,
    S2C,
    ProtocolError,
    decode,
)

# (MicroPython has no os.environ: these tests also run in the browser.)
EXAMPLES = int(getattr(os, "environ", {}).get("COVIEW_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: The codes a frame can earn from the decoder alone (the rest come from the server).
FRAME_CODES = {
    P.BAD_JSON,
    P.TOO_LARGE,
    P.NOT_OBJECT,
    P.UNKNOWN_TYPE,
    P.BAD_FIELD,
    P.WRONG_DIRECTION,
}
TYPES = sorted(MESSAGES)
DIRECTIONS = (C2S, S2C)


# --- the oracle -------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return type(v) is int and abs(v) <= P.MAX_INT


def _is_num(v: Any) -> bool:
    return type(v) in (int, float) and not (isinstance(v, float) and not math.isfinite(v))


def _candidate_ok(v: dict[str, Any]) -> bool:
    cand = v.get("candidate")
    if type(cand) is not str or len(cand) > 1024:
        return False
    mid = v.get("sdpMid")
    if mid is not None and (type(mid) is not str or len(mid) > 64):
        return False
    index = v.get("sdpMLineIndex")
    if index is not None and not (type(index) is int and 0 <= index <= 64):
        return False
    ufrag = v.get("usernameFragment")
    return ufrag is None or (type(ufrag) is str and len(ufrag) <= 256)


def _value_ok(spec: tuple[Any, ...], v: Any) -> bool:
    kind, _required, max_len, choices, _nullable = spec
    ok = {
        P.STR: lambda: type(v) is str,
        P.INT: lambda: _is_int(v),
        P.NUM: lambda: _is_num(v),
        P.BOOL: lambda: type(v) is bool,
        P.LIST: lambda: type(v) is list,
        P.DICT: lambda: type(v) is dict,
        P.CANDIDATE: lambda: type(v) is dict and _candidate_ok(v),
    }[kind]()
    if not ok:
        return False
    if max_len is not None and len(v) > max_len:
        return False
    return choices is None or v in choices


def expected_code(value: Any, direction: str) -> str | None:
    """What docs/protocol.md says a decoded JSON value deserves: None means accepted."""
    if type(value) is not dict:
        return P.NOT_OBJECT
    mtype = value.get("type")
    if type(mtype) is not str:
        return P.BAD_FIELD
    if mtype not in MESSAGES:
        return P.UNKNOWN_TYPE
    allowed, fields = MESSAGES[mtype]
    if allowed not in (P.BOTH, direction):
        return P.WRONG_DIRECTION
    for name, spec in fields.items():
        required, nullable = spec[1], spec[4]
        if name not in value:
            if required:
                return P.BAD_FIELD
            continue
        v = value[name]
        if v is None:
            if nullable or not required:
                continue
            return P.BAD_FIELD
        if not _value_ok(spec, v):
            return P.BAD_FIELD
    return None


#: What a parser raises on text that is not JSON.  MicroPython (these tests also run in the
#: browser) has no RecursionError: it raises RuntimeError when nesting is too deep.
PARSE_ERRORS = (ValueError, getattr(builtins, "RecursionError", RuntimeError))


def expected_for_text(text: str, direction: str) -> str | None:
    try:
        raw = text.encode("utf-8")
    except UnicodeError:  # lone surrogates: no UTF-8 form at all (CPython)
        return P.TOO_LARGE if len(text) > MAX_MESSAGE_BYTES else P.BAD_JSON
    if len(raw) > MAX_MESSAGE_BYTES:
        return P.TOO_LARGE
    if not utf8_strict(raw):  # lone surrogates again (MicroPython encodes them anyway)
        return P.BAD_JSON
    if depth_of(text) > MAX_DEPTH:  # "nests deeper than 64": refused before any parsing
        return P.BAD_JSON
    try:
        value = _strict_loads(text)
    except PARSE_ERRORS:
        return P.BAD_JSON
    return expected_code(value, direction)


def depth_of(text: str) -> int:
    """How deep arrays and objects nest in JSON text, strings skipped (the oracle's own
    reading of the Transport rule); more brackets than the limit in all is needed to go
    over it, so only such texts are walked character by character."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def utf8_strict(raw: bytes) -> bool:
    """RFC 3629 UTF-8, byte by byte (MicroPython's own decoder is laxer than this)."""
    try:
        if len(raw.decode("utf-8")) == len(raw):
            return True  # ASCII
    except UnicodeError:
        return False
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        if b < 0x80:
            i += 1
            continue
        if 0xC2 <= b <= 0xDF:
            need, low, high = 1, 0x80, 0xBF
        elif 0xE0 <= b <= 0xEF:
            need = 2
            low, high = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F)}.get(b, (0x80, 0xBF))
        elif 0xF0 <= b <= 0xF4:
            need = 3
            low, high = {0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}.get(b, (0x80, 0xBF))
        else:
            return False
        if i + need >= n:
            return False
        if not low <= raw[i + 1] <= high:
            return False
        for k in range(2, need + 1):
            if not 0x80 <= raw[i + k] <= 0xBF:
                return False
        i += need + 1
    return True


def _strict_loads(text: str) -> Any:
    """JSON (RFC 8259) without NaN or Infinity literals, which CPython would take.

    MicroPython's ``json.loads`` has no ``parse_constant`` (a TypeError) and refuses those
    literals by itself; it is laxer elsewhere (trailing commas, leading zeros), which
    test_protocol.py's malformed-JSON cases check on every interpreter.
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except TypeError:
        return json.loads(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def outcome(frame: str | bytes, direction: str) -> str | None:
    """Decode; None when accepted.  Anything but a ProtocolError fails the test."""
    try:
        msg = decode(frame, direction)
    except ProtocolError as err:
        assert err.code in FRAME_CODES, err
        # The server answers with exactly this error: it must be a valid message itself.
        answer = P.error(err.code, err.text, err.ref)
        assert P.decode(P.encode(answer), S2C) == answer
        assert err.ref is None or err.ref in MESSAGES
        return err.code
    assert type(msg) is dict and expected_code(msg, direction) is None, msg
    return None


# --- strategies -------------------------------------------------------------------------------


def _json(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**64), max_value=2**64)
        | floats
        | st.text(max_size=12)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=12,
    )


#: Any JSON CPython writes, NaN and infinities included (not JSON: the decoder refuses them).
json_values = _json(st.floats())
#: What a conforming peer sends in free-form fields: finite numbers only.
finite_values = _json(st.floats(allow_nan=False, allow_infinity=False))


def valid_value(spec: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    kind, _required, max_len, choices, nullable = spec
    if choices is not None:
        out: st.SearchStrategy[Any] = st.sampled_from(choices)
    elif kind == P.STR:
        cap = max_len or 100
        out = st.text(max_size=min(cap, 30)) | st.just("s" * cap)
    elif kind == P.INT:
        out = st.integers(min_value=-P.MAX_INT, max_value=P.MAX_INT)
    elif kind == P.NUM:
        out = st.integers(-(2**60), 2**60) | st.floats(allow_nan=False, allow_infinity=False)
    elif kind == P.BOOL:
        out = st.booleans()
    elif kind == P.LIST:
        out = st.lists(finite_values, max_size=min(max_len or 4, 4))
    elif kind == P.DICT:
        out = st.dictionaries(st.text(max_size=6), finite_values, max_size=3)
    else:
        out = st.fixed_dictionaries(
            {"candidate": st.text(max_size=40)},
            optional={
                "sdpMid": st.none() | st.text(max_size=64),
                "sdpMLineIndex": st.none() | st.integers(0, 64),
                "usernameFragment": st.none() | st.text(max_size=256),
            },
        )
    return st.none() | out if nullable else out


@st.composite
def valid_message(draw: st.DrawFn, mtype: str | None = None) -> dict[str, Any]:
    mtype = mtype or draw(st.sampled_from(TYPES))
    msg: dict[str, Any] = {"type": mtype}
    for name, spec in MESSAGES[mtype][1].items():
        if spec[1] or draw(st.booleans()):
            msg[name] = draw(valid_value(spec))
    return msg


def nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message of any type, then one to three damaging edits."""
    msg = draw(valid_message())
    fields = sorted(MESSAGES[msg["type"]][1]) + ["type"]
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(fields) | st.text(max_size=8))
        edit = draw(st.sampled_from(["drop", "value", "huge", "deep", "wrong", "null"]))
        if edit == "drop":
            msg.pop(key, None)
        elif edit == "value":
            msg[key] = draw(json_values)
        elif edit == "huge":
            msg[key] = draw(st.sampled_from(["x", "\u00e9", "\U0001f600"])) * draw(
                st.sampled_from([65, 257, 1025, 4001, 60001, 70000])
            )
        elif edit == "deep":
            msg[key] = nested(draw(st.sampled_from([2, 50, 500])))
        elif edit == "wrong":
            msg[key] = draw(st.sampled_from([True, False, 0, -1, 2**53, 1.5, "", "1", [], {}]))
        else:
            msg[key] = None
    return msg


# --- properties -------------------------------------------------------------------------------


@FUZZ
@given(msg=valid_message(), direction=st.sampled_from(DIRECTIONS))
def test_valid_messages_are_accepted_only_in_their_direction(
    msg: dict[str, Any], direction: str
) -> None:
    text = P.encode(msg)
    want = expected_for_text(text, direction)
    assert outcome(text, direction) == want
    if want is None:
        assert decode(text, direction) == msg


@FUZZ
@given(msg=mutated(), direction=st.sampled_from(DIRECTIONS))
def test_mutated_messages_get_exactly_the_documented_answer(
    msg: dict[str, Any], direction: str
) -> None:
    text = json.dumps(msg)
    want = expected_for_text(text, direction)
    assert outcome(text, direction) == want
    assert outcome(text.encode("ascii"), direction) == want  # json.dumps writes ASCII


@FUZZ
@given(msg=valid_message(), data=st.data(), direction=st.sampled_from(DIRECTIONS))
def test_damaged_bytes_of_valid_frames(
    msg: dict[str, Any], data: st.DataObject, direction: str
) -> None:
    # Slicing and concatenating bytes, not editing a bytearray in place: MicroPython's
    # bytearray has no item deletion (these tests also run in the browser).
    raw = P.encode(msg).encode("utf-8")
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw = raw[:at] + bytes([raw[at] ^ 1 << data.draw(st.integers(0, 7))]) + raw[at + 1 :]
        elif op == "insert":
            raw = raw[:at] + data.draw(st.binary(min_size=1, max_size=4)) + raw[at:]
        elif op == "delete" and raw:
            raw = raw[:at] + raw[at + 1 :]
        elif op == "truncate":
            raw = raw[:at]
        elif op == "dup":
            raw = raw[:at] + raw[at : at + data.draw(st.integers(1, 20))] + raw[at:]
    frame = raw
    got = outcome(frame, direction)
    if len(frame) > MAX_MESSAGE_BYTES:
        assert got == P.TOO_LARGE
        return
    try:
        text = frame.decode("utf-8")
    except UnicodeError:  # (UnicodeDecodeError: MicroPython has only UnicodeError)
        assert got == P.BAD_JSON
        return
    if not utf8_strict(frame):  # what MicroPython's decoder takes but UTF-8 forbids
        assert got == P.BAD_JSON
        return
    assert got == expected_for_text(text, direction)
    assert outcome(text, direction) == got


@FUZZ
@given(
    frame=st.binary(max_size=400) | st.text(st.characters(exclude_categories=()), max_size=400),
    direction=st.sampled_from(DIRECTIONS),
)
def test_random_bytes_and_text(frame: str | bytes, direction: str) -> None:
    got = outcome(frame, direction)
    if isinstance(frame, str):
        assert got == expected_for_text(frame, direction)


@FUZZ
@given(value=json_values, key=st.sampled_from(["type", "x"]), direction=st.sampled_from(DIRECTIONS))
def test_any_json_under_any_key(value: Any, key: str, direction: str) -> None:
    for frame in (
        json.dumps(value),
        json.dumps({key: value}),
        json.dumps({"type": "ping", key: value}),
    ):
        assert outcome(frame, direction) == expected_for_text(frame, direction)


# --- huge fields, deep nesting, wrong types: every type, every field ------------------------------


def _base(mtype: str) -> dict[str, Any]:
    """The smallest valid message of a type (required fields only)."""
    msg: dict[str, Any] = {"type": mtype}
    sample = {
        P.STR: "s",
        P.INT: 1,
        P.NUM: 1.5,
        P.BOOL: True,
        P.LIST: [],
        P.DICT: {},
        P.CANDIDATE: {"candidate": ""},
    }
    for name, (kind, required, _max, choices, _n) in MESSAGES[mtype][1].items():
        if required:
            msg[name] = choices[0] if choices else sample[kind]
    return msg


def _home(mtype: str) -> str:
    return C2S if MESSAGES[mtype][0] in (P.BOTH, C2S) else S2C


FIELDS = [(t, f) for t in TYPES for f in MESSAGES[t][1]]
SIZED = [(t, f) for t, f in FIELDS if MESSAGES[t][1][f][2] is not None]


@pytest.mark.parametrize(("mtype", "name"), SIZED, ids=[f"{t}.{f}" for t, f in SIZED])
def test_every_bounded_field_at_and_over_its_limit(mtype: str, name: str) -> None:
    kind, _req, max_len, choices, _null = MESSAGES[mtype][1][name]
    assert max_len is not None
    direction = _home(mtype)
    unit: Any = "\U0001f600" if kind == P.STR else 0  # limits count characters, not bytes
    for size in (max_len, max_len + 1, 70000):
        value = unit * size if kind == P.STR else [unit] * size
        msg = dict(_base(mtype), **{name: value})
        text = json.dumps(msg)
        want = expected_for_text(text, direction)
        if size > max_len:
            assert want in (P.BAD_FIELD, P.TOO_LARGE)
        elif choices is None and len(text.encode()) <= MAX_MESSAGE_BYTES:
            assert want is None
        assert outcome(text, direction) == want


WRONG = [None, True, 0, -(2**60), 2**53, 1.5, float("nan"), float("inf"), "", "x", [], [1], {}]


@pytest.mark.parametrize(("mtype", "name"), FIELDS, ids=[f"{t}.{f}" for t, f in FIELDS])
def test_every_field_with_every_wrong_type(mtype: str, name: str) -> None:
    for direction in DIRECTIONS:
        for value in WRONG:
            text = json.dumps(dict(_base(mtype), **{name: value}))
            assert outcome(text, direction) == expected_for_text(text, direction), value


@pytest.mark.parametrize("mtype", TYPES)
def test_every_type_with_its_type_field_damaged(mtype: str) -> None:
    for bad in (None, 1, True, [mtype], {"t": mtype}, mtype.upper(), mtype + " ", mtype * 100):
        text = json.dumps(dict(_base(mtype), type=bad))
        code = outcome(text, _home(mtype))
        assert code in (P.BAD_FIELD, P.UNKNOWN_TYPE)


@pytest.mark.parametrize("depth", [100_000, 1_000_000])
def test_deep_nesting_over_the_cap_is_too_large_before_parsing(depth: int) -> None:
    for text in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        assert outcome(text, C2S) == P.TOO_LARGE
        assert outcome(text.encode(), C2S) == P.TOO_LARGE


@pytest.mark.parametrize("depth", [1_000, 10_000, 30_000])
def test_deep_nesting_under_the_cap_is_bad_json_or_a_message(depth: int) -> None:
    frames = [
        "[" * depth + "]" * depth,
        "[" * depth,
        '{"type": "ping", "x": ' + "[" * depth + "]" * depth + "}",
        '{"type": "welcome", "version": "1", "role": "agent", "conn": "c", "ice_servers": [],'
        ' "info": ' + '{"a":' * (depth // 6) + "1" + "}" * (depth // 6) + "}",
        '{"type": "ping", "t": ' + "[" * depth + "1" + "]" * depth + "}",
    ]
    for text in frames:
        assert len(text) <= MAX_MESSAGE_BYTES
        for direction in DIRECTIONS:
            assert outcome(text, direction) == expected_for_text(text, direction)
    assert decode('{"type": "ping"}', C2S) == {"type": "ping"}  # the parser is still fine


def test_nesting_up_to_the_documented_depth_is_accepted_and_one_more_is_bad_json() -> None:
    # The frame's object is level 1, so a field may hold MAX_DEPTH - 1 levels.
    msg = {"type": "ping", "extra": nested(MAX_DEPTH - 1)}
    assert decode(json.dumps(msg), C2S) == msg
    welcome = dict(_base("welcome"), info={"a": nested(MAX_DEPTH - 2)})
    assert decode(json.dumps(welcome), S2C) == welcome
    for text in (
        json.dumps({"type": "ping", "extra": nested(MAX_DEPTH)}),
        json.dumps(dict(_base("welcome"), info={"a": nested(MAX_DEPTH - 1)})),
    ):
        assert depth_of(text) == MAX_DEPTH + 1
        assert outcome(text, C2S) == outcome(text, S2C) == P.BAD_JSON
    # Brackets inside strings are not nesting, escaped quotes or not.
    text = json.dumps({"type": "ping", "x": ['\\"[{' * 100, "]" * 100]})
    assert depth_of(text) == 2 and outcome(text, C2S) is None


@pytest.mark.parametrize(
    "number",
    ["1" * 5000, "-" + "9" * 5000, "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1" * 100],
)
def test_extreme_numbers(number: str) -> None:
    for field in ("t", "x"):
        text = f'{{"type": "ping", "{field}": {number}}}'
        assert outcome(text, C2S) == expected_for_text(text, C2S)
    text = f'{{"type": "share_request", "conversation": {number}}}'
    assert outcome(text, C2S) == expected_for_text(text, C2S) in (P.BAD_FIELD, P.BAD_JSON)


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "ping", "x": NaN}',
        '{"type": "ice", "pc": "p", "candidate": {"candidate": "", "x": Infinity}}',
        '{"type": "offer", "pc": "p", "sdp": "v=0", "x": [-Infinity]}',
    ],
)
def test_non_json_number_literals_are_bad_json_as_on_micropython(text: str) -> None:
    """CPython's json takes NaN/Infinity, which are not JSON; the decoder refuses them in
    every field (unknown ones, candidate extras) so they are never forwarded to a page."""
    assert outcome(text, C2S) == P.BAD_JSON
