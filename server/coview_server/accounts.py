"""Accounts: what an agent may do, and the admin's operations on accounts.

Permissions are read from the database on every action they guard, never from the
snapshot a socket took at its handshake, so an admin's change takes effect on the next
click, on every console at once.  Two layers decide: the company-wide switch (stored in
``company_settings``, default on) and the agent's own permission (``users``).

The operations here change stored state and then tell the hub, which ends what the
change forbids (a disabled agent's sockets and shares) and updates open consoles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .models import MAX_DISPLAY_NAME, ROLES
from .passwords import check_password_policy
from .store import AuthError, Store, StoreError, UserRow, normalize_email

if TYPE_CHECKING:  # the hub imports this module for its permission checks
    from .hub import HubFront

#: Company-wide switches and their values when nothing is stored.
SCREEN_SHARING = "screen_sharing"
COMPANY_DEFAULTS = {SCREEN_SHARING: "on"}

COMPANY_OFF_TEXT = "Screen sharing is switched off for the whole company by an administrator."
AGENT_OFF_TEXT = "An administrator has not allowed you to use screen sharing."
DISABLED_TEXT = "Your account was disabled by an administrator; you have been signed out."


class AccountError(Exception):
    """An admin form input refused; ``text`` is shown as it is, nothing was changed."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass(frozen=True, slots=True)
class Company:
    screen_sharing: bool


async def company(store: Store) -> Company:
    stored = {**COMPANY_DEFAULTS, **await store.company_settings()}
    return Company(screen_sharing=stored[SCREEN_SHARING] == "on")


async def share_refusal(store: Store, user_id: int) -> str | None:
    """Why ``user_id`` may not start a screen share now, or None when they may."""
    user = await store.get_user(user_id)
    if user is None or user.disabled:
        return DISABLED_TEXT
    if not (await company(store)).screen_sharing:
        return COMPANY_OFF_TEXT
    if not user.can_screen_share:
        return AGENT_OFF_TEXT
    return None


# --- admin operations ---------------------------------------------------------------------


def _check_password(password: str) -> None:
    try:
        check_password_policy(password)
    except ValueError as exc:
        raise AccountError(f"Password: {exc}.") from None


async def create_account(
    store: Store, email: str, display_name: str, password: str, role: str
) -> UserRow:
    try:
        normalize_email(email)
    except ValueError:
        raise AccountError("Email: enter an address like name@example.com.") from None
    name = display_name.strip()
    if not name:
        raise AccountError("Name: enter the agent's name as colleagues should see it.")
    if len(name) > MAX_DISPLAY_NAME:
        raise AccountError(f"Name: use at most {MAX_DISPLAY_NAME} characters.")
    if role not in ROLES:
        raise AccountError("Role: choose agent or admin.")
    _check_password(password)
    try:
        return await store.create_user(email, name, password, role)
    except StoreError:
        raise AccountError("Email: an account with this address already exists.") from None


async def _target(store: Store, user_id: int) -> UserRow:
    user = await store.get_user(user_id)
    if user is None:
        raise AccountError("That account does not exist (any more).")
    return user


async def set_disabled(
    store: Store, hub: HubFront, admin: UserRow, user_id: int, disabled: bool
) -> UserRow:
    """Disabling signs the agent out everywhere at once and ends their shares."""
    user = await _target(store, user_id)
    if disabled and user.id == admin.id:
        raise AccountError("You cannot disable your own account.")
    if disabled and user.is_admin and not user.disabled and await store.count_active_admins() <= 1:
        raise AccountError("This is the last active admin: make another admin first.")
    row = await store.set_user_disabled(user.id, disabled)
    if disabled:
        await hub.disconnect_user(user.id, DISABLED_TEXT)
    return row


async def reset_password(store: Store, hub: HubFront, user_id: int, password: str) -> UserRow:
    """A new password from an admin: the account's sessions and sockets end with it."""
    user = await _target(store, user_id)
    _check_password(password)
    await store.set_password(user.id, password)
    await hub.disconnect_user(
        user.id, "An administrator reset your password; sign in with the new one."
    )
    return user


async def set_screen_share(store: Store, hub: HubFront, user_id: int, allowed: bool) -> UserRow:
    user = await _target(store, user_id)
    row = await store.set_user_permissions(user.id, can_screen_share=allowed)
    await hub.push_permissions(user.id)
    return row


async def set_company_screen_sharing(store: Store, hub: HubFront, on: bool) -> None:
    await store.set_company_setting(SCREEN_SHARING, "on" if on else "off")
    await hub.push_permissions(None)


async def change_own_password(
    store: Store, user: UserRow, current: str, new: str, repeat: str
) -> None:
    """An agent's own change: proves the current password, then signs out other sessions."""
    if new != repeat:
        raise AccountError("The two new passwords differ: type the same one twice.")
    _check_password(new)
    try:
        await store.authenticate(user.email, current)
    except AuthError as exc:
        if exc.code == "locked":
            raise AccountError("Too many wrong passwords: wait a few minutes.") from None
        raise AccountError("Current password: that is not your current password.") from None
    await store.set_password(user.id, new)
