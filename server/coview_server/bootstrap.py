"""First-start provisioning: make sure a fresh install can be logged into.

A self-hosted server that starts with no account would need a separate setup step
before anyone can use it; instead the first start creates one admin. The generated
password is returned rather than logged, because logs are often shipped elsewhere and
kept for a long time; the caller shows it once on the operator's terminal.
"""

from __future__ import annotations

import secrets

from .store import Store, StoreError

__all__ = ["DEFAULT_ADMIN_EMAIL", "ensure_admin"]

DEFAULT_ADMIN_EMAIL = "admin@coview.local"


async def ensure_admin(
    store: Store, email: str | None = None, password: str | None = None
) -> str | None:
    """Create an admin when there are no users at all.

    Returns the password only when it was generated here (the caller must show
    it); returns None when users already exist or the caller supplied the password
    (e.g. from ``COVIEW_ADMIN_PASSWORD``), since the caller knows it already.
    """
    if await store.count_users() > 0:
        return None
    secret = password or secrets.token_urlsafe(18)
    try:
        await store.create_user(email or DEFAULT_ADMIN_EMAIL, "Administrator", secret, role="admin")
    except StoreError as exc:
        if exc.code != "email_taken":
            raise
        # Another process starting at the same time created it first.
        return None
    return None if password else secret
