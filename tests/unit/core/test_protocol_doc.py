"""docs/protocol.md and coview.protocol describe the same protocol.

Every message type and every error code appears in the document as `` `name` ``; the
message tables list exactly the types of ``MESSAGES`` with their directions and fields,
and the error table lists exactly ``ERROR_CODES``.
"""

import re
from pathlib import Path

import pytest

from coview import liveness, negotiation, protocol, share
from coview.protocol import BOTH, C2S, ERROR_CODES, MESSAGES, S2C

DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
TEXT = DOC.read_text(encoding="utf-8")
TICKED = set(re.findall(r"`([^`\s]+)`", TEXT))
DIRECTIONS = {"c→s": C2S, "s→c": S2C, "both": BOTH}


def section(title):
    """The text under ``## title`` up to the next level-2 heading."""
    match = re.search(r"^## " + re.escape(title) + r"\s*$(.*?)(?=^## |\Z)", TEXT, re.M | re.S)
    assert match, "docs/protocol.md has no section '" + title + "'"
    return match.group(1)


def table_rows(text):
    """Cells of every table body row in ``text`` (header and rule rows skipped)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|") or re.match(r"^\|[\s:|-]+\|$", line):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]
        if cells and cells[0].startswith("`"):
            rows.append(cells)
    return rows


def name_of(cell):
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, "first cell should be one `name`: " + cell
    return match.group(1)


MESSAGE_ROWS = [row for row in table_rows(section("Messages")) if len(row) == 5]
DOCUMENTED = {name_of(row[0]): row for row in MESSAGE_ROWS}
ERROR_ROWS = [row for row in table_rows(section("Errors")) if len(row) == 3]


def test_every_message_type_is_named_in_the_doc():
    missing = sorted(set(MESSAGES) - TICKED)
    assert missing == []


def test_every_error_code_is_named_in_the_doc():
    missing = sorted(set(ERROR_CODES) - TICKED)
    assert missing == []


def test_the_message_tables_list_exactly_the_protocols_types():
    names = [name_of(row[0]) for row in MESSAGE_ROWS]
    assert len(names) == len(set(names)), "a type is documented twice"
    assert set(names) - set(MESSAGES) == set(), "documented but not in MESSAGES"
    assert set(MESSAGES) - set(names) == set(), "in MESSAGES but not documented"


@pytest.mark.parametrize("mtype", sorted(MESSAGES))
def test_each_documented_type_has_its_direction_and_fields(mtype):
    _, direction, sent_by, fields, meaning = DOCUMENTED[mtype]
    assert DIRECTIONS[direction] == MESSAGES[mtype][0]
    assert sent_by and meaning
    spec = MESSAGES[mtype][1]
    documented = re.findall(r"(?:^|; )`([^`]+)`", fields)
    assert documented == list(spec), "fields of " + mtype
    for part in fields.split("; "):
        name = re.match(r"`([^`]+)`", part).group(1)
        kind, required, max_len, choices, nullable = spec[name]
        assert ("optional" in part) == (not required), (mtype, name)
        assert ("may be null" in part) == nullable, (mtype, name)
        if max_len is not None:
            assert "≤ " + str(max_len) in part, (mtype, name)
        if choices is not None:
            assert part.split(" ", 1)[1].split(",")[0] == " / ".join(choices), (mtype, name)


def test_the_error_table_lists_exactly_the_error_codes():
    names = [name_of(row[0]) for row in ERROR_ROWS]
    assert sorted(names) == sorted(ERROR_CODES)
    assert len(names) == len(set(names))


def test_handshake_failures_and_close_codes_are_documented():
    errors = section("Errors")
    for code in ("1008", "1009", "1000"):
        assert code in errors
    assert "4000" in errors
    assert "`fatal: true`" in errors
    fatal = {name_of(row[0]): row[1] for row in ERROR_ROWS}
    assert fatal["too_large"] == "yes"
    for code in ("handshake_required", "unsupported_version", "unauthorized", "expired", "used"):
        assert fatal[code] == "yes", code


def test_share_states_and_end_reasons_are_documented():
    lifecycle = section("The share lifecycle")
    for state in share.STATES:
        assert "`" + state + "`" in lifecycle
    reasons = [
        share.DECLINED,
        share.STOPPED_BY_SHARER,
        share.STOPPED_BY_VIEWER,
        share.SHARER_LEFT,
        share.VIEWER_LEFT,
        share.REQUESTER_LEFT,
        share.REQUEST_TIMEOUT,
        share.OPEN_TIMEOUT,
        share.PICK_TIMEOUT,
        share.SERVER_SHUTDOWN,
        share.KEY_LOCKED,
        share.SHARER_LOST,
    ]
    documented = {name_of(row[0]) for row in table_rows(lifecycle) if len(row) == 2}
    assert documented == set(reasons)
    for seconds in (share.REQUEST_TIMEOUT_S, share.OPEN_TIMEOUT_S, share.PICK_TIMEOUT_S):
        assert str(int(seconds)) + " s" in lifecycle


def test_the_numbers_in_the_doc_are_the_codes():
    assert str(int(liveness.PING_AFTER_S)) + " s" in section("Liveness")
    assert str(int(liveness.DEAD_AFTER_S)) + " s" in section("Liveness")
    rules = section("Negotiation")
    assert str(int(negotiation.DISCONNECTED_GRACE_S)) + " s" in rules
    assert "After **" + str(negotiation.MAX_RESTARTS) + "** restarts" in rules
    assert protocol.MAX_MESSAGE_BYTES == 65536 and "65 536 bytes" in section("Transport")
    assert '"versions": ["' + protocol.PROTOCOL_VERSION + '"]' in section("Handshake")


def test_the_candidate_keys_are_documented():
    rows = [r for r in table_rows(section("Messages")) if len(r) == 3]
    assert [name_of(r[0]) for r in rows] == [
        "candidate",
        "sdpMid",
        "sdpMLineIndex",
        "usernameFragment",
    ]


def test_the_roles_and_flows_are_documented():
    handshake = section("Handshake")
    for role in protocol.ROLES:
        assert "`" + role + "`" in handshake
    assert "welcome.info.token" in handshake
    flows = section("Flows")
    assert "#share=<id>&t=<token>" in flows
    assert "`/ws`" in section("Transport")
