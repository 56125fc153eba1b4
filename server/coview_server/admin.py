"""Server-rendered account pages: agents and permissions (admins), the audit trail and its
CSV export (admins), and an agent's own password (everyone).

Plain HTML forms, no script: they work in any browser and need nothing from the
console's Pyodide.  Every POST carries the session's CSRF token (as ``/logout`` does),
every route checks the signed-in user's role itself, and a refused input is answered
with the page again, status 400, an ``alert`` saying what to fix, and nothing stored.
"""

from __future__ import annotations

import csv
import io
import secrets
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from . import accounts
from .accounts import AccountError
from .hub import HubFront
from .models import ROLES, AuditRow
from .pages import current_user, render
from .settings import Settings
from .signaling import SESSION_COOKIE
from .store import Store, UserRow

AUDIT_PAGE_LIMIT = 500
CSV_LIMIT = 100_000
EXPIRED_FORM = "This form expired. Reload the page and try again."
ADMIN_ONLY = "Only administrators can open this page."

SURFACE_WORDS = {"monitor": "screen", "window": "window", "browser": "tab", "unknown": "unknown"}
ACTIONS = ("create", "disable", "enable", "password", "allow_share", "block_share", "company")


async def _signed_in(request: Request) -> tuple[UserRow, str] | Response:
    found = await current_user(request)
    if found is None:
        if request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        return PlainTextResponse("Please sign in again.", status_code=401)
    return found


async def _admin(request: Request) -> tuple[UserRow, str] | Response:
    found = await _signed_in(request)
    if isinstance(found, Response):
        return found
    if not found[0].is_admin:
        return HTMLResponse(ADMIN_ONLY, status_code=403, headers={"Cache-Control": "no-store"})
    return found


def _csrf_ok(expected: str, form: Any) -> bool:
    sent = str(form.get("csrf", ""))
    return bool(sent) and secrets.compare_digest(expected, sent)


# --- agents -------------------------------------------------------------------------------


async def agents(request: Request) -> Response:
    found = await _admin(request)
    if isinstance(found, Response):
        return found
    admin, csrf = found
    if request.method == "GET":
        return await _agents_page(request, admin, csrf)
    form = await request.form()
    if not _csrf_ok(csrf, form):
        return await _agents_page(request, admin, csrf, error=EXPIRED_FORM, status=400)
    store: Store = request.state.store
    hub: HubFront = request.state.hub
    action = str(form.get("action", ""))
    try:
        done = await _act(store, hub, admin, action, form)
    except AccountError as exc:
        kept = {k: str(form.get(k, "")) for k in ("email", "name", "role")}
        return await _agents_page(request, admin, csrf, error=exc.text, status=400, form=kept)
    return await _agents_page(request, admin, csrf, done=done)


async def _act(store: Store, hub: HubFront, admin: UserRow, action: str, form: Any) -> str:
    if action not in ACTIONS:
        raise AccountError("Unknown action: reload the page and try again.")
    if action == "create":
        user = await accounts.create_account(
            store,
            str(form.get("email", ""))[:300],
            str(form.get("name", ""))[:300],
            str(form.get("password", ""))[:1024],
            str(form.get("role", "agent")),
        )
        return f"Created the account of {user.display_name} ({user.email})."
    if action == "company":
        on = str(form.get("screen_sharing", "")) == "on"
        await accounts.set_company_screen_sharing(store, hub, on)
        return "Screen sharing is now " + ("on" if on else "off") + " for the whole company."
    raw = str(form.get("user", ""))
    if not raw.isdigit() or len(raw) > 12:
        raise AccountError("That account does not exist (any more).")
    user_id = int(raw)
    if action in ("disable", "enable"):
        user = await accounts.set_disabled(store, hub, admin, user_id, action == "disable")
        return f"{user.display_name} is now " + ("disabled." if user.disabled else "active.")
    if action == "password":
        user = await accounts.reset_password(
            store, hub, user_id, str(form.get("password", ""))[:1024]
        )
        return f"Set a new password for {user.display_name}; they were signed out."
    allowed = action == "allow_share"
    user = await accounts.set_screen_share(store, hub, user_id, allowed)
    return f"{user.display_name} may " + ("now" if allowed else "no longer") + " share screens."


async def _agents_page(
    request: Request,
    admin: UserRow,
    csrf: str,
    *,
    error: str | None = None,
    done: str | None = None,
    status: int = 200,
    form: dict[str, str] | None = None,
) -> Response:
    store: Store = request.state.store
    return render(
        request,
        "admin_agents.html",
        status,
        user=admin,
        csrf=csrf,
        error=error,
        done=done,
        users=await store.list_users(),
        company=await accounts.company(store),
        roles=ROLES,
        form=form or {"role": "agent"},
        active="agents",
    )


# --- audit trail -------------------------------------------------------------------------


class FilterError(ValueError):
    pass


def _day(value: str, name: str) -> date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FilterError(f"{name}: use a date like 2025-03-01.") from None


async def _filters(request: Request, store: Store) -> dict[str, Any]:
    """The audit filters from the query string, checked; the same for page and CSV."""
    q = request.query_params
    since, until = _day(q.get("from", ""), "From"), _day(q.get("to", ""), "To")
    if since and until and until < since:
        raise FilterError("To: the end date is before the start date.")
    agent_raw = q.get("agent", "").strip()
    agent_id = None
    if agent_raw:
        if not agent_raw.isdigit() or len(agent_raw) > 12:
            raise FilterError("Agent: choose an agent from the list.")
        agent_id = int(agent_raw)
        if await store.get_user(agent_id) is None:
            raise FilterError("Agent: choose an agent from the list.")
    reason = q.get("reason", "").strip() or None
    if reason is not None and (len(reason) > 64 or not reason.replace("_", "").isalpha()):
        raise FilterError("End reason: choose a reason from the list.")

    def stamp(d: date | None, extra_days: int = 0) -> float | None:
        if d is None:
            return None
        start = datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(days=extra_days)
        return start.timestamp()

    return {
        "since": stamp(since),
        "until": stamp(until, 1),  # the "to" day is included
        "agent_id": agent_id,
        "end_reason": reason,
    }


def _when(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _visitor(row: AuditRow) -> str:
    if row.channel == "internal":
        return "Colleague " + (row.colleague_name or "(deleted)")
    who = "Phone caller" if row.channel == "phone" else "Visitor"
    return f"{who} {row.visitor_id[:6]}"


def audit_cells(row: AuditRow) -> dict[str, str]:
    """One share as the table and the CSV show it (UTC times, seconds as h:mm:ss)."""
    return {
        "share": row.share_id,
        "requested_at": _when(row.created_at),
        "agent": row.agent_name,
        "agent_email": row.agent_email,
        "visitor": _visitor(row),
        "channel": row.channel,
        "surface": SURFACE_WORDS.get(row.surface or "", row.surface or ""),
        "started_at": _when(row.started_at),
        "ended_at": _when(row.ended_at),
        "duration": _duration(row.duration),
        "end_reason": row.end_reason or ("" if row.ended_at else "running"),
        "ended_by": row.ended_by or "",
        "path": row.path or "",
    }


CSV_COLUMNS = (
    "share",
    "requested_at",
    "agent",
    "agent_email",
    "visitor",
    "channel",
    "surface",
    "started_at",
    "ended_at",
    "duration",
    "end_reason",
    "ended_by",
    "path",
)


async def audit(request: Request) -> Response:
    found = await _admin(request)
    if isinstance(found, Response):
        return found
    admin, csrf = found
    store: Store = request.state.store
    error, rows, status = None, [], 200
    try:
        filters = await _filters(request, store)
        rows = await store.audit_shares(**filters, limit=AUDIT_PAGE_LIMIT)
    except FilterError as exc:
        error, status = str(exc), 400
    q = request.query_params
    return render(
        request,
        "admin_audit.html",
        status,
        user=admin,
        csrf=csrf,
        error=error,
        rows=[audit_cells(r) for r in rows],
        limit=AUDIT_PAGE_LIMIT,
        users=await store.list_users(),
        reasons=await store.end_reasons(),
        chosen={k: q.get(k, "") for k in ("from", "to", "agent", "reason")},
        query=str(request.url.query),
        active="audit",
    )


def csv_safe(value: str) -> str:
    """Neutralise spreadsheet formulas: a cell starting with = + - @ (or a tab or carriage
    return, which some spreadsheets skip before one) is prefixed with a quote."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value


async def audit_csv(request: Request) -> Response:
    found = await _admin(request)
    if isinstance(found, Response):
        return found
    store: Store = request.state.store
    try:
        filters = await _filters(request, store)
    except FilterError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    rows = await store.audit_shares(**filters, limit=CSV_LIMIT)
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        cells = audit_cells(row)
        writer.writerow([csv_safe(cells[c]) for c in CSV_COLUMNS])
    name = "coview-audit-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + ".csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


# --- the agent's own account ------------------------------------------------------------


async def account(request: Request) -> Response:
    found = await _signed_in(request)
    if isinstance(found, Response):
        return found
    user, csrf = found
    if request.method == "GET":
        return _account_page(request, user, csrf)
    form = await request.form()
    if not _csrf_ok(csrf, form):
        return _account_page(request, user, csrf, error=EXPIRED_FORM, status=400)
    store: Store = request.state.store
    settings: Settings = request.state.settings
    try:
        await accounts.change_own_password(
            store,
            user,
            str(form.get("current", ""))[:1024],
            str(form.get("new", ""))[:1024],
            str(form.get("repeat", ""))[:1024],
        )
    except AccountError as exc:
        return _account_page(request, user, csrf, error=exc.text, status=400)
    # Every session ended with the old password, this one too: start a fresh one here.
    token, new_csrf = await store.create_session(user.id, ttl=settings.session_ttl_s)
    response = _account_page(
        request, user, new_csrf, done="Your password was changed. Other sessions were signed out."
    )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.session_ttl_s),
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        path="/",
    )
    return response


def _account_page(
    request: Request,
    user: UserRow,
    csrf: str,
    *,
    error: str | None = None,
    done: str | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "account.html",
        status,
        user=user,
        csrf=csrf,
        error=error,
        done=done,
        active="account",
    )
