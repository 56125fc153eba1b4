"""``/share``: where a caller on the phone types the key the agent reads to them.

A plain HTML form, no script: it must load at once on whatever browser the caller has,
and it only sends one field.  It is CSRF-protected like the login form (a cookie and a
hidden field that must match): without that, any site could make its visitors' browsers
try keys for it, from as many addresses as it has visitors, or push a visitor into a
share window the site chose.

Every rule about keys lives in :mod:`coview_server.keys` and ``Hub.claim_key``; this
module turns their outcome into words and, for a good key, into a redirect to the same
popup a chat visitor gets (``/popup#share=…&t=…``).
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from . import keys
from .hub import HubFront
from .pages import _client_ip, render
from .settings import Settings

CSRF_COOKIE = "coview_key_csrf"
#: Proof, in the browser that spent a key, that it did (``KeyRing.proof``).
SPENT_COOKIE = "coview_key_spent"
SPENT_MAX_AGE_S = 3600

PATH = "/share"


def wrong_text(settings: Settings) -> str:
    """The one answer for every key that opens nothing: it never says whether one existed."""
    return (
        "That key is not valid. Check the digits with the agent. "
        f"A key works once, for {keys.duration(settings.share_key_ttl_s)}: "
        "if yours is older or was already used, ask the agent for a new one."
    )


USED_HERE_TEXT = (
    "You have already used this key: it works only once. "
    "If the share window closed, ask the agent for a new key."
)
RATE_LIMITED_TEXT = "Too many attempts from your address. Wait a few minutes and try again."
EXPIRED_FORM_TEXT = "This page expired. Please type the key again."


def malformed_text(settings: Settings) -> str:
    return f"Type the {settings.share_key_digits} digits of the key, for example 123 456."


async def share_key(request: Request) -> Response:
    settings: Settings = request.state.settings
    if request.method == "GET":
        return _form(request, settings)
    form = await request.form()
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = str(form.get("csrf", ""))
    if not cookie or not secrets.compare_digest(cookie, sent):
        return _form(request, settings, EXPIRED_FORM_TEXT, 400)
    key = keys.normalize(str(form.get("key", "")), settings.share_key_digits)
    if key is None:
        return _form(request, settings, malformed_text(settings), 400)
    hub: HubFront = request.state.hub
    claim = await hub.claim_key(
        key,
        _client_ip(request),
        proof=request.cookies.get(SPENT_COOKIE),
        user_agent=request.headers.get("user-agent", ""),
    )
    if claim.outcome == keys.OK and claim.popup_url and claim.proof:
        # The popup token is in the fragment: browsers keep it across the redirect and
        # never send it back in a request line, so it is in no access log.
        response = RedirectResponse(claim.popup_url, status_code=303)
        response.set_cookie(
            SPENT_COOKIE,
            claim.proof,
            max_age=SPENT_MAX_AGE_S,
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookies,
            path=PATH,
        )
        response.delete_cookie(CSRF_COOKIE, path=PATH)
        return response
    if claim.outcome == keys.RATE_LIMITED:
        return _form(request, settings, RATE_LIMITED_TEXT, 429)
    if claim.outcome == keys.USED_HERE:
        return _form(request, settings, USED_HERE_TEXT, 400)
    return _form(request, settings, wrong_text(settings), 400)


def _form(
    request: Request, settings: Settings, error: str | None = None, status: int = 200
) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "share.html",
        status,
        csrf=token,
        error=error,
        digits=settings.share_key_digits,
        lifetime=keys.duration(settings.share_key_ttl_s),
    )
    response.set_cookie(
        CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        path=PATH,
    )
    return response
