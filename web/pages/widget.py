"""The visitor's chat widget (MicroPython): chat, share invitations, the share bar."""

import js

from coview import protocol as P
from coview_web import dom, ffi, media
from coview_web.channel import Channel

TOKEN_KEY = "coview.visitor"

log = dom.by_id("log")
status = dom.by_id("status")
message = dom.by_id("message")
send_button = dom.by_id("send")
share_bar = dom.by_id("share-bar")
share_text = dom.by_id("share-text")
share_stop = dom.by_id("share-stop")

state = {"conversation": None, "shares": {}, "seen": {}, "counter": 0}

_SHARE_WORDS = {
    "requested": "Support asked to see your screen.",
    "accepted": "Opening the share window…",
    "waiting": "Choose what to share in the share window.",
    "live": "You are sharing your screen with support.",
}


def _storage_get():
    try:
        value = js.window.localStorage.getItem(TOKEN_KEY)
        return None if ffi.is_none(value) else str(value)
    except Exception:  # storage can be blocked in third-party frames
        return None


def _storage_set(value):
    try:
        js.window.localStorage.setItem(TOKEN_KEY, value)
    except Exception:
        pass


def _current_page():
    ref = js.document.referrer
    return str(ref) if ref else str(js.window.location.href)


def add_message(m):
    key = str(m.get("id"))
    if key in state["seen"]:
        return
    state["seen"][key] = True
    sender = m.get("sender", "system")
    who = {"visitor": "You", "agent": m.get("agent_name") or "Support", "system": ""}[sender]
    item = dom.create("li", None, "from-" + sender)
    if who:
        item.appendChild(dom.create("span", who + " · " + dom.format_time(m.get("at")), "meta"))
    item.appendChild(dom.create("span", m.get("text", "")))
    log.appendChild(item)
    log.scrollTop = log.scrollHeight


def show_invite(msg):
    share_id = msg["share"]
    if share_id in state["shares"]:
        return
    entry = {"url": msg["popup_url"], "window": None, "item": None, "state": "requested"}
    state["shares"][share_id] = entry
    item = dom.create("li", None, "invite")
    item.dataset.url = entry["url"]
    item.appendChild(
        dom.create("p", msg["agent_name"] + " would like to see your screen to help you.")
    )
    row = dom.create("div", None, "actions")

    def accept(event):
        # Opened inside the click so the browser counts it as the visitor's own action.
        win = js.window.open(entry["url"], "coview-share-" + share_id, "width=560,height=700")
        if ffi.is_none(win):
            note = dom.create("p", "Your browser blocked the share window. ")
            link = dom.create(
                "a",
                "Open the share window",
                None,
                {"href": entry["url"], "target": "_blank", "rel": "opener"},
            )
            note.appendChild(link)
            item.appendChild(note)
        entry["window"] = win
        channel.send(P.make("share_accept", share=share_id))
        _answered(item)

    def decline(event):
        channel.send(P.make("share_decline", share=share_id))
        _answered(item)

    row.appendChild(dom.button("Accept", accept))
    row.appendChild(dom.button("Decline", decline, "secondary"))
    item.appendChild(row)
    entry["item"] = item
    log.appendChild(item)
    log.scrollTop = log.scrollHeight


def _answered(item):
    buttons = item.getElementsByTagName("button")
    for i in range(ffi.length(buttons)):
        buttons[i].disabled = True


def on_share_state(msg):
    share_id = msg["share"]
    entry = state["shares"].get(share_id)
    if entry is None:
        entry = {"url": None, "window": None, "item": None, "state": msg["state"]}
        state["shares"][share_id] = entry
    entry["state"] = msg["state"]
    if msg["state"] == "ended":
        if entry["item"] is not None:
            _answered(entry["item"])
        state["shares"].pop(share_id, None)
        dom.show(share_bar, False)
        return
    if msg["state"] in ("accepted", "waiting", "live"):
        dom.text(share_text, _SHARE_WORDS[msg["state"]])
        share_bar.dataset.share = share_id
        dom.show(share_bar, True)


def on_message(msg):
    mtype = msg["type"]
    if mtype == "welcome":
        token = msg["info"].get("token")
        if token:
            _storage_set(token)
        can, reason = media.can_capture()
        channel.send(
            P.make(
                "visitor_info",
                page=_current_page()[:2048],
                user_agent=str(js.navigator.userAgent)[:1024],
                can_share=can,
                share_reason=reason,
            )
        )
        dom.enable(message, True)
        dom.enable(send_button, True)
    elif mtype == "history":
        state["conversation"] = msg["conversation"]
        for m in msg["messages"]:
            add_message(m)
    elif mtype == "chat":
        state["conversation"] = msg["conversation"]
        add_message(msg["message"])
    elif mtype == "share_invite":
        show_invite(msg)
    elif mtype == "share_state":
        on_share_state(msg)
    elif mtype == "error":
        dom.text(status, msg["text"])


def on_status(value):
    words = {
        "connecting": "Connecting…",
        "open": "Online",
        # What is written meanwhile is sent once the connection is back.
        "reconnecting": "Connection lost: reconnecting…",
        "closed": "Offline: reload to reconnect.",
    }
    dom.text(status, words.get(value, value))
    if value == "closed":
        dom.enable(message, False)
        dom.enable(send_button, False)


def on_submit(event):
    event.preventDefault()
    text = str(message.value).strip()
    if not text:
        return
    state["counter"] += 1
    client_id = str(ffi.now_ms()) + "-" + str(state["counter"])
    channel.send(P.make("chat_send", text=text, client_id=client_id))
    message.value = ""


def on_keydown(event):
    if str(event.key) == "Enter" and not event.shiftKey:
        on_submit(event)


def on_stop(event):
    share_id = share_bar.dataset.share
    if not ffi.is_none(share_id):
        channel.send(P.make("share_stop", share=str(share_id)))


channel = Channel("visitor", _storage_get(), on_message, on_status)
dom.on(dom.by_id("composer"), "submit", on_submit)
dom.on(message, "keydown", on_keydown)
dom.on(share_stop, "click", on_stop)
channel.connect()
js.document.body.dataset.ready = "1"
