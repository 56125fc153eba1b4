"""The account pages over HTTP: who may open them, CSRF, malformed input answered with a
clear error and nothing stored, disabling that closes live sockets, the audit filters and
the CSV export (quoting and formula injection)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ADMIN_EMAIL, make_settings
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from test_pages import Elements, csrf_of
from test_signaling import connect, handshake, login, of_type

from coview import protocol as P
from coview_server.admin import csv_safe
from coview_server.app import create_app
from coview_server.signaling import SESSION_COOKIE
from coview_server.store import Store

AGENT_PW = "agent password 1"
T_MAR = 1_740_873_600.0  # 2025-03-02 00:00 UTC


@pytest.fixture(autouse=True)
def _isolated(isolated_app: None) -> None:
    pass


@pytest.fixture
def client(tmp_path: Any) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        yield c


def call(client: TestClient, fn: Any, *args: Any, **kwargs: Any) -> Any:
    assert client.portal is not None
    return client.portal.call(lambda: fn(*args, **kwargs))


def form_csrf(client: TestClient, path: str = "/admin/agents") -> str:
    return csrf_of(client.get(path).text.split("</header>")[0])


def post(client: TestClient, data: dict[str, str], path: str = "/admin/agents") -> Any:
    return client.post(path, data={"csrf": form_csrf(client, path), **data})


def create(client: TestClient, email: str, name: str = "Bea", role: str = "agent") -> Any:
    return post(
        client,
        {"action": "create", "email": email, "name": name, "role": role, "password": AGENT_PW},
    )


def alert(html: str) -> str:
    start = html.index('role="alert">') + len('role="alert">')
    return html[start : html.index("</p>", start)]


def users(client: TestClient) -> list[Any]:
    return list(call(client, client.app_state["store"].list_users))  # type: ignore[attr-defined]


def test_anonymous_and_agents_are_kept_out(client: TestClient) -> None:
    for path in ("/admin/agents", "/admin/audit", "/admin/audit.csv", "/account"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.post("/admin/agents", data={"action": "create"}).status_code == 401
    login(client)
    assert create(client, "bea@example.com").status_code == 200
    client.cookies.clear()
    login(client, "bea@example.com", AGENT_PW)
    for path in ("/admin/agents", "/admin/audit", "/admin/audit.csv"):
        r = client.get(path)
        assert r.status_code == 403 and "Only administrators" in r.text
    r = client.post("/admin/agents", data={"csrf": form_csrf(client, "/account"), "action": "x"})
    assert r.status_code == 403
    assert client.get("/account").status_code == 200
    assert "/admin/agents" not in client.get("/console").text  # no admin links for agents


def test_admin_forms_need_the_session_csrf_token(client: TestClient) -> None:
    login(client)
    r = client.post(
        "/admin/agents",
        data={"action": "create", "email": "x@example.com", "name": "X", "password": AGENT_PW},
    )
    assert r.status_code == 400 and "form expired" in alert(r.text)
    assert [u.email for u in users(client)] == [ADMIN_EMAIL]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"action": "create", "email": "nope", "name": "N", "password": AGENT_PW}, "Email"),
        ({"action": "create", "email": "n@example.com", "name": "", "password": AGENT_PW}, "Name"),
        (
            {"action": "create", "email": "n@example.com", "name": "N", "password": "short"},
            "Password",
        ),
        (
            {
                "action": "create",
                "email": "n@x.com",
                "name": "N",
                "password": AGENT_PW,
                "role": "god",
            },
            "Role",
        ),
        ({"action": "disable", "user": "abc"}, "does not exist"),
        ({"action": "disable", "user": "99999"}, "does not exist"),
        ({"action": "disable", "user": "1"}, "your own account"),
        ({"action": "password", "user": "1", "password": "x"}, "Password"),
        ({"action": "drop_tables"}, "Unknown action"),
    ],
)
def test_malformed_admin_input_gets_a_clear_error_and_changes_nothing(
    client: TestClient, data: dict[str, str], words: str
) -> None:
    login(client)
    before = users(client)
    r = post(client, data)
    assert r.status_code == 400
    assert words in alert(r.text)
    assert users(client) == before
    if data.get("action") == "create":  # what was typed is kept, but never the password
        page = Elements(r.text)
        assert page.find("input", name="email")[0]["value"] == data["email"]
        assert page.find("input", id="new-password")[0].get("value") is None


def test_create_disable_enable_reset_and_permissions(client: TestClient) -> None:
    login(client)
    r = create(client, "Bea@Example.com", "Bea Agent")
    assert r.status_code == 200 and "Created the account of Bea Agent" in r.text
    bea = next(u for u in users(client) if u.email == "bea@example.com")
    assert bea.role == "agent" and bea.can_screen_share and not bea.disabled
    assert create(client, "bea@example.com").status_code == 400

    assert post(client, {"action": "block_share", "user": str(bea.id)}).status_code == 200
    assert not next(u for u in users(client) if u.id == bea.id).can_screen_share
    assert post(client, {"action": "allow_share", "user": str(bea.id)}).status_code == 200
    assert post(client, {"action": "disable", "user": str(bea.id)}).status_code == 200
    assert next(u for u in users(client) if u.id == bea.id).disabled
    assert post(client, {"action": "enable", "user": str(bea.id)}).status_code == 200
    r = post(client, {"action": "password", "user": str(bea.id), "password": "new agent pw 2"})
    assert r.status_code == 200 and "new password for Bea Agent" in r.text
    r = post(client, {"action": "company", "screen_sharing": "off"})
    assert "now off for the whole company" in r.text
    assert "Turn screen sharing on for everyone" in r.text

    client.cookies.clear()
    login(client, "bea@example.com", "new agent pw 2")
    assert "Start a phone share" in client.get("/console").text
    assert 'id="phone-start" hidden' in client.get("/console").text  # company switch is off


def test_disabling_closes_the_agents_socket_at_once(client: TestClient) -> None:
    login(client)
    create(client, "bea@example.com")
    admin_cookie = client.cookies[SESSION_COOKIE]
    bea = next(u for u in users(client) if u.email == "bea@example.com")
    client.cookies.clear()
    login(client, "bea@example.com", AGENT_PW)
    with connect(client) as ws:
        handshake(ws, "agent")
        assert of_type(ws, "permissions")["screen_share"] is True
        client.cookies.clear()
        client.cookies[SESSION_COOKIE] = admin_cookie
        assert post(client, {"action": "block_share", "user": str(bea.id)}).status_code == 200
        assert of_type(ws, "permissions")["screen_share"] is False
        ws.send("phone_share_start")
        assert of_type(ws, "error")["code"] == P.FORBIDDEN
        assert post(client, {"action": "disable", "user": str(bea.id)}).status_code == 200
        err = of_type(ws, "error")
        assert err["code"] == P.UNAUTHORIZED and err["fatal"] and "disabled" in err["text"]
        with pytest.raises(WebSocketDisconnect):
            ws.recv()
        assert ws.close_code == 1000


def test_change_own_password(client: TestClient) -> None:
    login(client)
    create(client, "bea@example.com")
    client.cookies.clear()
    login(client, "bea@example.com", AGENT_PW)
    old = client.cookies[SESSION_COOKIE]

    def change(current: str, new: str, repeat: str) -> Any:
        return post(client, {"current": current, "new": new, "repeat": repeat}, "/account")

    assert "differ" in alert(change(AGENT_PW, "new agent pw 2", "other").text)
    assert "Password" in alert(change(AGENT_PW, "short", "short").text)
    r = change("wrong password", "new agent pw 2", "new agent pw 2")
    assert r.status_code == 400 and "not your current password" in alert(r.text)
    r = change(AGENT_PW, "new agent pw 2", "new agent pw 2")
    assert r.status_code == 200 and "password was changed" in r.text
    assert client.cookies[SESSION_COOKIE] != old
    assert client.get("/console", follow_redirects=False).status_code == 200
    client.cookies.clear()
    client.cookies[SESSION_COOKIE] = old
    assert client.get("/console", follow_redirects=False).status_code == 303


def _seed_shares(client: TestClient) -> dict[str, Any]:
    store: Store = client.app_state["store"]  # type: ignore[attr-defined]

    async def seed() -> dict[str, Any]:
        eve = await store.create_user("eve@example.com", '=HYPERLINK("x")', AGENT_PW)
        ada = await store.get_user_by_email(ADMIN_EMAIL)
        assert ada is not None
        out: dict[str, Any] = {"eve": eve, "ada": ada}
        for who, t, reason, surface in (
            (eve, T_MAR, "stopped_by_viewer", "monitor"),
            (ada, T_MAR + 86400 * 3, "sharer_left", "browser"),
        ):
            visitor, _ = await store.create_visitor(now=t)
            conv = await store.open_conversation(visitor.id, now=t)
            share = await store.create_share(conv.id, who.id, None, None, "requested", now=t)
            await store.update_share(
                share.id,
                state="ended",
                started_at=t + 10,
                ended_at=t + 75,
                end_reason=reason,
                ended_by="agent",
                surface=surface,
                path="direct",
            )
            out[reason] = share.id
        return out

    assert client.portal is not None
    result: dict[str, Any] = client.portal.call(seed)
    return result


def test_audit_page_filters(client: TestClient) -> None:
    login(client)
    seeded = _seed_shares(client)
    page = client.get("/admin/audit")
    assert page.status_code == 200 and "2 shares" in page.text
    assert "0:01:05" in page.text and "tab" in page.text and "screen" in page.text
    one = client.get("/admin/audit", params={"agent": str(seeded["eve"].id)})
    assert "1 share." in one.text and "stopped_by_viewer" in one.text
    by_reason = client.get("/admin/audit", params={"reason": "sharer_left"})
    assert "1 share." in by_reason.text and seeded["ada"].display_name in by_reason.text
    dated = client.get("/admin/audit", params={"from": "2025-03-02", "to": "2025-03-02"})
    assert "1 share." in dated.text and "2025-03-02 00:00:00" in dated.text
    assert "0 shares" in client.get("/admin/audit", params={"from": "2030-01-01"}).text
    for params, words in (
        ({"from": "yesterday"}, "From: use a date"),
        ({"from": "2025-03-05", "to": "2025-03-01"}, "before the start"),
        ({"agent": "1; DROP"}, "Agent"),
        ({"agent": "4242"}, "Agent"),
        ({"reason": "<script>"}, "End reason"),
    ):
        r = client.get("/admin/audit", params=params)
        assert r.status_code == 400 and words in alert(r.text), params
        assert client.get("/admin/audit.csv", params=params).status_code == 400


def test_audit_csv_export(client: TestClient) -> None:
    login(client)
    seeded = _seed_shares(client)
    r = client.get("/admin/audit.csv")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    disposition = r.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="coview-audit-') and ".csv" in disposition
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 2
    newest, oldest = rows
    assert newest["share"] == seeded["sharer_left"] and newest["surface"] == "tab"
    assert oldest["agent"] == '\'=HYPERLINK("x")'  # quoted by csv, defused by the prefix
    assert '"\'=HYPERLINK(""x"")"' in r.text
    assert oldest["duration"] == "0:01:05" and oldest["ended_by"] == "agent"
    assert oldest["started_at"] == "2025-03-02 00:00:10" and oldest["path"] == "direct"
    filtered = client.get("/admin/audit.csv", params={"reason": "stopped_by_viewer"})
    assert [row["share"] for row in csv.DictReader(io.StringIO(filtered.text))] == [
        seeded["stopped_by_viewer"]
    ]


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("plain", "plain"),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_csv_safe(value: str, safe: str) -> None:
    assert csv_safe(value) == safe
