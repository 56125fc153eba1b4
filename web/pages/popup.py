"""The visitor's share window (MicroPython): explain, pick, preview, stop."""

import js

from coview import protocol as P
from coview_web import dom, ffi, media
from coview_web.channel import Channel

status = dom.by_id("status")
explain = dom.by_id("explain")
who = dom.by_id("who")
problem = dom.by_id("problem")
share_button = dom.by_id("share")
stop_button = dom.by_id("stop")
preview_box = dom.by_id("preview-box")
preview = dom.by_id("preview")
path_line = dom.by_id("path")

_PATH_WORDS = {
    "direct": "Connection: direct to the agent.",
    "turn": "Connection: through the support TURN server.",
    "relay": "Connection: through the support server's relay.",
}

state = {
    "share": None,
    "stream": None,
    "track": None,
    "peers": {},
    "pending": [],
    "ended": False,
    "ice": [],
    "ice_policy": "all",
    "can": False,  # this browser can capture (known from the welcome on)
}

_END_WORDS = {
    "stopped_by_sharer": "You stopped sharing.",
    "stopped_by_viewer": "The agent ended the screen share.",
    "viewer_left": "The agent left; the screen share ended.",
    "requester_left": "The agent left; the screen share ended.",
    "declined": "You declined the screen share.",
    "request_timeout": "The request expired.",
    "open_timeout": "The request expired.",
    "pick_timeout": "Nothing was chosen in time; the share ended.",
    "server_shutdown": "The service restarted; the share ended.",
}

_ERROR_WORDS = {
    "used": "This share link has already been used. Ask the agent for a new request.",
    "expired": "This share link has expired. Ask the agent for a new request.",
    "ended": "This screen share has already ended. Ask the agent for a new request.",
    "unauthorized": "This share link is not valid. Ask the agent for a new request.",
}


def _read_fragment():
    """Read share id and token from the URL fragment, then drop them from the address."""
    raw = str(js.window.location.hash)
    values = {}
    for part in raw.lstrip("#").split("&"):
        if "=" in part:
            key, value = part.split("=", 1)
            values[key] = value
    try:
        js.window.history.replaceState(None, "", str(js.window.location.pathname))
    except Exception:
        pass
    return values.get("share"), values.get("t")


def fail(text):
    dom.text(problem, text)
    dom.show(problem, True)


def end(text):
    state["ended"] = True
    for pc_id in list(state["peers"]):
        state["peers"].pop(pc_id).close()
    media.stop_stream(state["stream"])
    state["stream"] = None
    preview.srcObject = None
    dom.show(preview_box, False)
    dom.enable(share_button, False)
    dom.show(stop_button, False)
    dom.text(status, text + " You can close this window.")


def _load_peer():
    """The peer connection code is the page's largest import (asyncio, the negotiation), and
    nothing needs it before a share starts: it is loaded once the button is usable (12 ms
    less to interactive, bench/README.md)."""
    from coview_web.peer import Peer

    return Peer


def start_peer(msg):
    Peer = _load_peer()
    ice = msg.get("ice_servers") or state["ice"]
    pc_id = msg["pc"]
    peer = Peer(
        pc_id, "offerer", ice, channel.send, stream=state["stream"], ice_policy=state["ice_policy"]
    )
    state["peers"][pc_id] = peer
    peer.start()


def sharing_words(away=None):
    """What the status line says while the share runs, the agent there or not."""
    if state["stream"] is None:
        return "Ready when you are."
    if away and "viewer" in away:
        return "The agent's connection dropped; waiting for them. You are still sharing."
    return "You are sharing your screen."


def on_message(msg):
    mtype = msg["type"]
    if mtype == "welcome" and channel.reconnected:
        # Back after a lost connection: the capture and the peer connections carried on.
        state["ice"] = msg["ice_servers"]
        dom.text(status, sharing_words())
    elif mtype == "welcome":
        info = msg["info"]
        state["share"] = info["share"]
        state["ice"] = msg["ice_servers"]
        state["ice_policy"] = info.get("ice_transport_policy", "all")
        dom.text(who, info.get("agent_name", "Support") + " from support asks to see your screen.")
        dom.show(explain, True)
        can, reason = media.can_capture()
        state["can"] = can
        if not can:
            fail(reason)
            channel.send(P.make("share_pick_failed", share=state["share"], reason="unsupported"))
            return
        dom.text(status, "Ready when you are.")
        dom.enable(share_button, True)
        ffi.set_timeout(_load_peer, 0)
    elif mtype == "peer":
        if state["stream"] is not None:
            start_peer(msg)
        else:
            state["pending"].append(msg)
    elif mtype == "peer_gone":
        state["pending"] = [m for m in state["pending"] if m["pc"] != msg["pc"]]
        peer = state["peers"].pop(msg["pc"], None)
        if peer is not None:
            peer.close()
    elif mtype in ("offer", "answer", "ice", "restart"):
        peer = state["peers"].get(msg["pc"])
        if peer is not None:
            peer.remote(msg)
    elif mtype == "peer_ice":
        peer = state["peers"].get(msg["pc"])
        if peer is not None:
            peer.set_ice(msg["ice_servers"])
    elif mtype == "share_state":
        if msg["state"] != "ended" and not state["ended"] and state["can"]:
            dom.text(status, sharing_words(msg.get("away")))
        words = _PATH_WORDS.get(msg.get("path") or "")
        dom.show(path_line, words is not None and msg["state"] == "live")
        if words is not None:
            dom.text(path_line, words)
        if msg["state"] == "ended":
            end(_END_WORDS.get(msg.get("reason") or "", "The screen share ended."))
    elif mtype == "error":
        text = _ERROR_WORDS.get(msg["code"], msg["text"])
        if msg.get("fatal"):
            dom.show(explain, False)
            if state["stream"] is not None:  # e.g. a resume refused: stop capturing now
                end("The screen share has ended.")  # what it says, not "cannot share"
            else:
                dom.text(status, "This window cannot share.")
            dom.enable(share_button, False)
            state["ended"] = True
        fail(text)


def on_status(value):
    if state["ended"]:
        return
    if value == "reconnecting":
        words = "The connection to support dropped; reconnecting…"
        if state["stream"] is not None:
            words += " You are still sharing."
        dom.text(status, words)
    elif value == "closed":
        end("The connection to support was lost.")


def on_track_ended(event):
    # The browser's own "Stop sharing" bar ends the track: treat it like our button.
    if not state["ended"] and state["share"] is not None:
        channel.send(P.make("share_stop", share=state["share"]))


async def on_share(event):
    dom.show(problem, False)
    dom.enable(share_button, False)
    try:
        stream, track = await media.capture()
    except Exception as exc:
        text = ffi.js_error_text(exc)
        cancelled = "NotAllowed" in text or "Permission" in text or "AbortError" in text
        fail(
            "You did not choose anything to share. Click Share my screen to try again."
            if cancelled
            else "Your browser could not start sharing: " + text
        )
        channel.send(
            P.make(
                "share_pick_failed",
                share=state["share"],
                reason="cancelled" if cancelled else "error",
            )
        )
        dom.enable(share_button, not state["ended"])
        return
    if state["ended"]:
        media.stop_stream(stream)
        return
    old = state["stream"]
    state["stream"] = stream
    state["track"] = track
    dom.on(track, "ended", on_track_ended)
    preview.srcObject = stream
    dom.show(preview_box, True)
    dom.show(stop_button, True)
    dom.text(share_button, "Share something else")
    dom.enable(share_button, True)
    dom.text(status, "You are sharing your screen.")
    channel.send(P.make("share_media", share=state["share"], surface=media.surface_of(track)))
    if old is not None:
        for pc_id in state["peers"]:
            state["peers"][pc_id].replace_track(track)
        media.stop_stream(old)
    pending = state["pending"]
    state["pending"] = []
    for peer_msg in pending:
        start_peer(peer_msg)


def on_stop(event):
    if state["share"] is not None:
        channel.send(P.make("share_stop", share=state["share"]))


def _remember(share):
    """Mark this window as used, so a reload can say what happened instead of 'invalid'."""
    try:
        if share:
            js.window.sessionStorage.setItem("coview.popup", share)
            return None
        value = js.window.sessionStorage.getItem("coview.popup")
        return None if ffi.is_none(value) else str(value)
    except Exception:  # storage may be disabled
        return None


share_id, token = _read_fragment()
channel = Channel("sharer", token, on_message, on_status)
dom.on(share_button, "click", on_share)
dom.on(stop_button, "click", on_stop)
if not token:
    if _remember(None):
        fail("Reloading this window ended the screen share. Ask the agent for a new request.")
    else:
        fail(_ERROR_WORDS["unauthorized"])
    dom.text(status, "This window cannot share.")
    state["ended"] = True
else:
    _remember(share_id)
    dom.text(status, "Connecting to support…")
    channel.connect()
js.document.body.dataset.ready = "1"
