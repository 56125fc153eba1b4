"""The agent console (Pyodide): conversations, chat, visitor record, watching a share."""

import asyncio

import js

from coview import protocol as P, quality
from coview_web import dom, ffi, stats
from coview_web.channel import Channel
from coview_web.peer import Peer

el = dom.by_id

STATE_WORDS = {
    "requested": "Requested: waiting for the visitor to accept.",
    "accepted": "Accepted: the visitor's share window is opening.",
    "waiting": "Waiting for the visitor to choose what to share.",
    "live": "Live: you are watching the visitor's screen.",
    "ended": "Ended.",
}
END_WORDS = {
    "declined": "The visitor declined the request.",
    "stopped_by_sharer": "The visitor stopped sharing.",
    "stopped_by_viewer": "You stopped the screen share.",
    "sharer_left": "The visitor closed the share window.",
    "viewer_left": "The share ended because no agent was watching.",
    "requester_left": "The share ended because you left.",
    "request_timeout": "The visitor did not answer in time.",
    "open_timeout": "The visitor's share window did not open in time.",
    "pick_timeout": "The visitor did not choose anything in time.",
    "server_shutdown": "The server restarted.",
}
PATH_WORDS = {
    "direct": "Direct (peer to peer)",
    "turn": "Relayed (TURN)",
    "relay": "Relayed (server)",
    "unknown": "–",
}
#: Words for a phone caller's share where they differ from a chat visitor's.
PHONE_STATE_WORDS = {
    "requested": "Waiting for the caller to type the key.",
    "accepted": "Accepted: the caller's share window is opening.",
    "waiting": "Waiting for the caller to choose what to share.",
    "live": "Live: you are watching the caller's screen.",
}
PHONE_END_WORDS = {
    "key_locked": "The key was locked after 5 wrong attempts. Make a new key for the caller.",
    "request_timeout": "The key expired before the caller typed it. Make a new key.",
    "stopped_by_sharer": "The caller stopped sharing.",
    "sharer_left": "The caller closed the share window.",
    "open_timeout": "The caller's share window did not open in time.",
    "pick_timeout": "The caller did not choose anything in time.",
}
#: Words for watching a colleague's screen (an internal share).
COLLEAGUE_STATE_WORDS = {
    "requested": "Requested: waiting for your colleague to accept.",
    "accepted": "Accepted: your colleague's share window is opening.",
    "waiting": "Waiting for your colleague to choose what to share.",
    "live": "Live: you are watching your colleague's screen.",
}
#: Words for our own screen, shown to a colleague who asked.
OUTGOING_WORDS = {
    "requested": " asks to see your screen.",
    "accepted": ": your share window is opening.",
    "waiting": ": choose what to share in the share window.",
    "live": " is watching your screen.",
}
SURFACE_WORDS = {
    "monitor": "entire screen",
    "window": "a window",
    "browser": "a browser tab",
    "unknown": "a screen or a window",  # the browser did not say (docs/browsers.md)
}


class Console:
    def __init__(self):
        self.conversations = {}  # id -> item
        self.current = None  # conversation id on screen
        self.records = {}
        self.seen = {}
        self.shares = {}  # share id -> {"conversation","state","reason","peer","stream",...}
        self.watching = {}
        self.keys = {}  # share id -> {"key", "conversation", "deadline"} (ms), this tab only
        self.counter = 0
        self.ice = []
        self.ice_policy = "all"
        self.me = {"id": None, "role": "agent"}
        # Until the server says (``permissions``), share actions stay as the page drew them.
        self.can_share = not el("phone-start").hidden
        self.share_refusal = None
        self.fatal_text = None
        self.outgoing = {}  # share id -> invite, for our own screen shown to a colleague
        self.asking = None  # colleague id we just asked, until the server answers
        self.channel = Channel("agent", None, self.on_message, self.on_status)

    # -- socket -------------------------------------------------------------------------

    def on_status(self, value):
        words = {
            "connecting": "Connecting…",
            "open": "Connected",
            # Shares keep running: their peer connections do not need the socket.
            "reconnecting": "Connection lost: reconnecting…",
            "closed": "Disconnected: reload the page to reconnect.",
        }
        dom.text(el("conn-status"), words.get(value, value))
        if value == "closed" and self.fatal_text:
            # Signed out by the server (account disabled, password reset): say why.
            dom.text(el("conn-status"), self.fatal_text + " Reload the page to sign in.")
        if value == "closed":
            for share_id in list(self.shares):
                self._drop_peer(share_id)

    def on_message(self, msg):
        handler = getattr(self, "on_" + msg["type"], None)
        if handler is not None:
            handler(msg)

    def on_welcome(self, msg):
        self.ice = msg["ice_servers"]
        self.ice_policy = msg["info"].get("ice_transport_policy", "all")
        self.me = msg["info"]["user"]
        if self.channel.reconnected:
            # Back after a lost connection: watch again (naming the peer connections we
            # still hold) when the server replays each share's state, and catch up on chat.
            for share_id in self.shares:
                self.shares[share_id]["watched"] = False
            if self.current is not None:
                self.channel.send(P.make("conversation_open", conversation=self.current))

    def on_error(self, msg):
        dom.text(el("conn-status"), msg["text"])
        if msg.get("fatal"):
            self.fatal_text = msg["text"]
        if self.asking is not None:
            dom.text(el("colleague-reason"), msg["text"])
            self.asking = None
        if msg.get("ref") in (None, "share_request") and self.current is not None:
            dom.text(el("share-reason"), msg["text"])

    def on_permissions(self, msg):
        """What an admin allows us now; the server refuses the rest anyway."""
        self.can_share = bool(msg["screen_share"])
        self.share_refusal = msg.get("reason")
        dom.show(el("phone-start"), self.can_share)
        dom.show(el("colleagues-box"), self.can_share)
        note = el("share-permission")
        dom.show(note, not self.can_share)
        dom.text(note, self.share_refusal or "Screen sharing is not available to you.")
        if self.current is not None:
            self.render_share()

    # -- conversations ------------------------------------------------------------------

    def on_conversations(self, msg):
        self.conversations = {}
        for item in msg["items"]:
            self.conversations[item["id"]] = item
        self.render_list()
        if self.current is None:
            # A reloaded tab returns to where it was (and so to a running share).
            last = _session_get("coview.console.current")
            if last is not None and last.isdigit() and int(last) in self.conversations:
                self.open(int(last))
                if _session_get("coview.console.tab") == "share":
                    self.select_tab("share")

    def visible(self, item):
        return (
            self.me["role"] == "admin"
            or item["status"] == "waiting"
            or item.get("agent_id") == self.me["id"]
        )

    def on_conversation_update(self, msg):
        item = msg["item"]
        if not self.visible(item):
            # Another agent took it: drop it from our list and our screen.
            self.conversations.pop(item["id"], None)
            if item["id"] == self.current:
                self.current = None
                dom.show(el("conv-view"), False)
                dom.text(el("conn-status"), "That conversation is now another agent's.")
            self.render_list()
            return
        self.conversations[item["id"]] = item
        self.render_list()
        if item["id"] == self.current:
            self.render_header()

    def render_list(self):
        box = el("conv-list")
        dom.clear(box)
        items = sorted(self.conversations.values(), key=lambda i: -i["updated_at"])
        dom.show(el("conv-empty"), not items)
        for item in items:
            status = {
                "waiting": "waiting",
                "open": "with " + (item.get("agent_name") or "agent"),
                "closed": "closed",
            }.get(item["status"], item["status"])
            online = "online" if item.get("online") else "offline"
            if item.get("channel") == "phone":
                online = "by phone"
            label = item["visitor_label"] + " — " + status + ", " + online
            if item.get("last_text"):
                label += ": " + item["last_text"]
            li = dom.create("li")
            btn = dom.button(label, self._opener(item["id"]))
            if item["id"] == self.current:
                btn.setAttribute("aria-current", "true")
            li.appendChild(btn)
            box.appendChild(li)

    def _opener(self, conv_id):
        def handler(event):
            self.open(conv_id)

        return handler

    def open(self, conv_id):
        self.current = conv_id
        _session_set("coview.console.current", str(conv_id))
        self.seen = {}
        dom.clear(el("chat-log"))
        dom.show(el("conv-view"), True)
        self.render_list()
        self.render_header()
        self.channel.send(P.make("conversation_open", conversation=conv_id))
        self.render_share()

    def render_header(self):
        item = self.conversations.get(self.current)
        if item is None:
            return
        dom.text(el("conv-title"), item["visitor_label"])
        dom.show(el("take"), item["status"] == "waiting")
        mine = item.get("agent_id") == self.me["id"] or self.me["role"] == "admin"
        can_move = item["status"] == "open" and mine and item.get("channel") != "internal"
        dom.show(el("transfer-form"), can_move and el("transfer-to").options.length > 0)

    def transfer(self, event):
        event.preventDefault()
        choice = str(el("transfer-to").value)
        if self.current is not None and choice.isdigit():
            self.channel.send(
                P.make("conversation_transfer", conversation=self.current, agent=int(choice))
            )

    def on_history(self, msg):
        if msg["conversation"] != self.current:
            return
        for m in msg["messages"]:
            self.add_message(m)

    def on_chat(self, msg):
        if msg["conversation"] == self.current:
            self.add_message(msg["message"])

    def add_message(self, m):
        key = str(m["id"])
        if key in self.seen:
            return
        self.seen[key] = True
        sender = m.get("sender", "system")
        li = dom.create("li", None, "from-" + sender)
        who = {"visitor": "Visitor", "agent": m.get("agent_name") or "Agent"}.get(sender)
        if who:
            li.appendChild(dom.create("span", who + " · " + dom.format_time(m.get("at")), "meta"))
        li.appendChild(dom.create("span", m.get("text", "")))
        log = el("chat-log")
        log.appendChild(li)
        log.scrollTop = log.scrollHeight

    def on_visitor(self, msg):
        self.records[msg["conversation"]] = msg["record"]
        if msg["conversation"] == self.current:
            self.render_record()
            self.render_share()

    def is_phone(self, conv_id=None):
        item = self.conversations.get(self.current if conv_id is None else conv_id) or {}
        return item.get("channel") == "phone"

    def render_record(self):
        rec = self.records.get(self.current) or {}
        if self.is_internal():
            dom.text(el("rec-online"), "A colleague")
            for name in ("rec-browser", "rec-os", "rec-page"):
                dom.text(el(name), "–")
            dom.text(el("rec-share"), "They accept in their own console")
            return
        if self.is_phone():
            dom.text(el("rec-online"), "On the phone")
            dom.text(el("rec-browser"), rec.get("browser") or "–")
            dom.text(el("rec-os"), rec.get("os") or "–")
            dom.text(el("rec-page"), rec.get("page") or "–")
            dom.text(el("rec-share"), "With a key you read to the caller")
            return
        dom.text(el("rec-online"), "Online" if rec.get("online") else "Offline")
        dom.text(el("rec-browser"), rec.get("browser") or "–")
        dom.text(el("rec-os"), rec.get("os") or "–")
        dom.text(el("rec-page"), rec.get("page") or "–")
        if rec.get("can_share"):
            dom.text(el("rec-share"), "Available")
        else:
            dom.text(el("rec-share"), "Unavailable: " + (rec.get("share_reason") or "unknown"))

    def send_reply(self, event):
        event.preventDefault()
        box = el("reply")
        text = str(box.value).strip()
        if not text or self.current is None:
            return
        self.counter += 1
        self.channel.send(
            P.make(
                "chat_send",
                conversation=self.current,
                text=text,
                client_id=str(ffi.now_ms()) + "-" + str(self.counter),
            )
        )
        box.value = ""

    def take(self, event):
        if self.current is not None:
            self.channel.send(P.make("conversation_take", conversation=self.current))

    # -- screen share -------------------------------------------------------------------

    def share_of_current(self):
        for share_id in self.shares:
            info = self.shares[share_id]
            if info["conversation"] == self.current and info["state"] != "ended":
                return share_id, info
        return None, None

    def request_share(self, event):
        if self.current is None:
            return
        item = self.conversations.get(self.current) or {}
        if item.get("status") == "waiting":
            self.channel.send(P.make("conversation_take", conversation=self.current))
        dom.text(el("share-reason"), "")
        self.channel.send(P.make("share_request", conversation=self.current))

    # -- phone callers ------------------------------------------------------------------

    def start_phone(self, event):
        """A new caller, conversation and key; the server answers ``phone_share_key``."""
        self.channel.send(P.make("phone_share_start"))

    def new_key(self, event):
        if self.current is not None and self.is_phone():
            dom.text(el("share-reason"), "")
            self.channel.send(P.make("phone_share_start", conversation=self.current))

    def on_phone_share_key(self, msg):
        self.keys[msg["share"]] = {
            "key": msg["key"],
            "conversation": msg["conversation"],
            "deadline": ffi.now_ms() + msg["expires_in"] * 1000.0,
        }
        if self.current != msg["conversation"]:
            self.open(msg["conversation"])
        self.select_tab("share")
        self.render_share()

    def render_key(self, share_id, info):
        """The key in large digits, grouped by three, with the address and time left."""
        entry = self.keys.get(share_id) if share_id is not None else None
        showing = entry is not None and info is not None and info["state"] == "requested"
        dom.show(el("phone-key-box"), showing)
        if not showing:
            dom.text(el("phone-key"), "")
            return
        key = entry["key"]
        dom.text(el("phone-key"), " ".join(key[i : i + 3] for i in range(0, len(key), 3)))
        dom.text(el("phone-address"), str(js.window.location.origin) + "/share")
        self.render_expiry()

    def render_expiry(self):
        share_id, info = self.share_of_current()
        entry = self.keys.get(share_id) if share_id is not None else None
        if entry is None:
            return
        left = max(0, int((entry["deadline"] - ffi.now_ms()) / 1000.0 + 0.5))
        text = "It works once. Expires in " + str(left // 60) + ":"
        text += ("0" if left % 60 < 10 else "") + str(left % 60) + "."
        dom.text(el("phone-key-expiry"), text)

    async def key_loop(self):
        while True:
            await asyncio.sleep(1)
            if self.keys:
                self.render_expiry()

    # -- colleagues (internal shares) ---------------------------------------------------------

    def _asker(self, button):
        def handler(event):
            self.asking = int(str(button.dataset.agent))
            dom.text(el("colleague-reason"), "Asking " + str(button.textContent) + "…")
            self.channel.send(P.make("colleague_share_request", agent=self.asking))

        return handler

    def is_internal(self, conv_id=None):
        item = self.conversations.get(self.current if conv_id is None else conv_id) or {}
        return item.get("channel") == "internal"

    def on_share_invite(self, msg):
        """A colleague asks to see our screen (an internal share)."""
        self.outgoing[msg["share"]] = msg
        self.render_outgoing(msg["share"], "requested")

    def render_outgoing(self, share_id, state):
        invite = self.outgoing.get(share_id) or {}
        box = el("colleague-invite")
        if state == "ended":
            self.outgoing.pop(share_id, None)
            dom.show(box, False)
            return
        box.dataset.share = share_id
        who = invite.get("agent_name") or "A colleague"
        dom.text(el("colleague-invite-text"), who + OUTGOING_WORDS.get(state, "."))
        dom.show(box, True)
        dom.show(el("colleague-accept"), state == "requested" and share_id in self.outgoing)
        dom.show(el("colleague-decline"), state == "requested")
        dom.show(el("colleague-stop"), state != "requested")

    def accept_colleague(self, event):
        share_id = str(el("colleague-invite").dataset.share)
        invite = self.outgoing.get(share_id)
        if invite is None:
            return
        # Opened inside the click, so the browser counts it as our own action.
        js.window.open(invite["popup_url"], "coview-share-" + share_id, "width=560,height=700")
        self.channel.send(P.make("share_accept", share=share_id))

    def decline_colleague(self, event):
        share_id = str(el("colleague-invite").dataset.share)
        self.channel.send(P.make("share_decline", share=share_id))

    def stop_outgoing(self, event):
        share_id = str(el("colleague-invite").dataset.share)
        self.channel.send(P.make("share_stop", share=share_id))

    def stop_share(self, event):
        share_id, info = self.share_of_current()
        if share_id is not None:
            self.channel.send(P.make("share_stop", share=share_id))

    def on_share_state(self, msg):
        share_id = msg["share"]
        if msg.get("colleague") is not None and msg.get("colleague") == self.me["id"]:
            self.render_outgoing(share_id, msg["state"])  # our own screen: never watched here
            return
        info = self.shares.get(share_id)
        if info is None and msg.get("colleague") is not None and self.asking is not None:
            # The share we just asked a colleague for: show it.
            self.asking = None
            dom.text(el("colleague-reason"), "")
            self.open(msg["conversation"])
            self.select_tab("share")
        if info is None:
            info = {
                "conversation": msg["conversation"],
                "peer": None,
                "stream": None,
                "prev": None,
                "path": None,
                "watched": False,
            }
            self.shares[share_id] = info
        info["state"] = msg["state"]
        info["reason"] = msg.get("reason")
        info["surface"] = msg.get("surface")
        info["note"] = msg.get("note")
        info["away"] = msg.get("away") or []
        if msg["state"] in ("accepted", "waiting", "live") and not info["watched"]:
            # Activate our side of the connection: the visitor's window will offer to us.
            info["watched"] = True
            watch = P.make("share_watch", share=share_id)
            if info["peer"] is not None:
                watch["pc"] = info["peer"].id  # still alive: the server keeps it
            self.channel.send(watch)
        if msg["state"] != "requested":
            self.keys.pop(share_id, None)  # entered, or dead: never shown again
        if msg["state"] == "ended":
            self._drop_peer(share_id)
            reason = msg.get("reason") or ""
            words = PHONE_END_WORDS.get(reason) if self.is_phone(msg["conversation"]) else None
            info["ended_note"] = words or END_WORDS.get(reason, "The share ended.")
            self.last_ended = (info["conversation"], info["ended_note"])
            self.shares.pop(share_id, None)
        if msg["conversation"] == self.current:
            self.render_share()

    def on_peer(self, msg):
        info = self.shares.get(msg["share"])
        if info is None:
            return
        self._drop_peer(msg["share"])
        share_id = msg["share"]
        if info["conversation"] == self.current:
            # A path switch (direct → relay): never leave the ended track's last frame up.
            self.render_share()

        def on_track(stream):
            info["stream"] = stream
            if info["conversation"] == self.current:
                self.render_share()

        info["via"] = msg.get("via") or "direct"
        info["peer"] = Peer(
            msg["pc"],
            msg["role"],
            msg.get("ice_servers") or self.ice,
            self.channel.send,
            on_track=on_track,
            on_failed=self._failed(share_id),
            ice_policy=self.ice_policy,
        )
        info["peer"].start()

    def _failed(self, share_id):
        def handler(reason):
            dom.text(el("share-reason"), "The media connection failed on this network.")

        return handler

    def on_peer_gone(self, msg):
        info = self.shares.get(msg["share"])
        if info is not None and info["peer"] is not None and info["peer"].id == msg["pc"]:
            self._drop_peer(msg["share"])

    def _peer_message(self, msg):
        for share_id in self.shares:
            peer = self.shares[share_id]["peer"]
            if peer is not None and peer.id == msg["pc"]:
                peer.remote(msg)
                return

    on_offer = on_answer = on_ice = on_restart = _peer_message

    def on_peer_ice(self, msg):
        for share_id in self.shares:
            peer = self.shares[share_id]["peer"]
            if peer is not None and peer.id == msg["pc"]:
                peer.set_ice(msg["ice_servers"])
                return

    def _drop_peer(self, share_id):
        info = self.shares.get(share_id)
        if info is None:
            return
        if info["peer"] is not None:
            info["peer"].close()
            info["peer"] = None
        info["stream"] = None
        info["prev"] = None
        if info["conversation"] == self.current:
            el("stage").dataset.framesDecoded = "0"  # the count belongs to the dropped pc

    def render_share(self):
        rec = self.records.get(self.current) or {}
        share_id, info = self.share_of_current()
        request = el("share-request")
        video = el("remote")
        phone = self.is_phone()
        self.render_key(share_id, info)
        dom.show(el("phone-new"), phone and info is None and self.can_share)
        if info is None:
            ended = getattr(self, "last_ended", None)
            text = "No screen share."
            if ended is not None and ended[0] == self.current:
                text = "Ended: " + ended[1]
            dom.text(el("share-state"), text)
            dom.show(request, not phone and self.can_share and not self.is_internal())
            allowed = bool(rec.get("can_share"))
            dom.enable(request, allowed)
            reason = "" if allowed else (rec.get("share_reason") or "The visitor cannot share.")
            if not self.can_share:
                reason = self.share_refusal or "Screen sharing is not available to you."
            if self.is_internal():
                reason = "Ask again from the Colleagues list to see their screen."
            dom.text(el("share-reason"), "" if phone and self.can_share else reason)
            dom.show(el("share-stop"), False)
            dom.show(el("fullscreen"), False)
            dom.show(el("stage"), False)
            dom.show(el("quality"), False)
            video.srcObject = None
            return
        words = STATE_WORDS.get(info["state"], info["state"])
        if self.is_internal():
            words = COLLEAGUE_STATE_WORDS.get(info["state"], words)
        if phone:
            words = PHONE_STATE_WORDS.get(info["state"], words)
            if info["state"] == "requested" and share_id not in self.keys:
                words += " Its key is shown only in the console tab that made it."
        if info["state"] == "live" and info.get("surface"):
            words += " They share " + SURFACE_WORDS.get(info["surface"], "a screen") + "."
        if info.get("note"):
            words += " " + info["note"]
        if "sharer" in info.get("away", []):
            words += " Their connection dropped; waiting for it to come back."
        dom.text(el("share-state"), words)
        dom.show(request, False)
        dom.show(el("share-stop"), True)
        live = info["state"] == "live" and info["stream"] is not None
        dom.show(el("stage"), live)
        dom.show(el("fullscreen"), live)
        dom.show(el("quality"), live)
        if info["stream"] is not None and ffi.is_none(video.srcObject):
            video.srcObject = info["stream"]
        elif info["stream"] is None:
            video.srcObject = None

    def fullscreen(self, event):
        el("stage").requestFullscreen()

    async def stats_loop(self):
        while True:
            await asyncio.sleep(1)
            for share_id in list(self.shares):
                info = self.shares.get(share_id)
                if info is None or info["peer"] is None or info["state"] != "live":
                    continue
                try:
                    snap = await stats.snapshot(info["peer"].pc)
                except Exception:
                    continue
                q = quality.summarize(info["prev"], snap)
                info["prev"] = snap
                if info.get("via") == "relay":
                    q["path"] = "relay"  # the stats see a direct path: to the server's relay
                elif q["path"] != info["path"] and q["path"] != "unknown":
                    info["path"] = q["path"]
                    self.channel.send(P.make("share_path", share=share_id, path=q["path"]))
                if info["conversation"] == self.current:
                    if q["frames_decoded"] is not None:
                        el("stage").dataset.framesDecoded = str(q["frames_decoded"])
                    self.render_quality(q)
                if info["peer"] is not None:
                    info["peer"].tick(ffi.now_ms() / 1000.0)

    def render_quality(self, q):
        res = "–" if q["width"] is None else str(q["width"]) + " × " + str(q["height"])
        dom.text(el("q-resolution"), res)
        dom.text(el("q-fps"), "–" if q["fps"] is None else str(round(q["fps"])) + " fps")
        dom.text(
            el("q-bitrate"),
            "–" if q["bitrate_kbps"] is None else str(round(q["bitrate_kbps"])) + " kbit/s",
        )
        dom.text(el("q-rtt"), "–" if q["rtt_ms"] is None else str(round(q["rtt_ms"])) + " ms")
        dom.text(el("q-path"), PATH_WORDS.get(q["path"], q["path"]))

    # -- sections and tabs --------------------------------------------------------------

    def section(self, name):
        def handler(event):
            for other in ("conversations", "account"):
                dom.show(el("section-" + other), other == name)
                nav = el("nav-" + other)
                if other == name:
                    nav.setAttribute("aria-current", "page")
                else:
                    nav.removeAttribute("aria-current")

        return handler

    def tab(self, name):
        def handler(event):
            self.select_tab(name)

        return handler

    def select_tab(self, name):
        _session_set("coview.console.tab", name)
        for other in ("details", "share"):
            tab = el("tab-" + other)
            tab.setAttribute("aria-selected", "true" if other == name else "false")
            tab.setAttribute("tabindex", "0" if other == name else "-1")
            dom.show(el("panel-" + other), other == name)
        el("tab-" + name).focus()

    def tab_keys(self, event):
        key = str(event.key)
        if key in ("ArrowRight", "ArrowLeft", "Home", "End"):
            current = (
                "share" if el("tab-share").getAttribute("aria-selected") == "true" else "details"
            )
            self.select_tab("details" if current == "share" else "share")
            event.preventDefault()

    def wire(self):
        dom.on(el("composer"), "submit", self.send_reply)
        dom.on(el("reply"), "keydown", self._reply_keys)
        dom.on(el("take"), "click", self.take)
        dom.on(el("transfer-form"), "submit", self.transfer)
        dom.on(el("share-request"), "click", self.request_share)
        dom.on(el("share-stop"), "click", self.stop_share)
        dom.on(el("phone-start"), "click", self.start_phone)
        dom.on(el("phone-new"), "click", self.new_key)
        dom.on(el("fullscreen"), "click", self.fullscreen)
        dom.on(el("colleague-accept"), "click", self.accept_colleague)
        dom.on(el("colleague-decline"), "click", self.decline_colleague)
        dom.on(el("colleague-stop"), "click", self.stop_outgoing)
        buttons = js.document.querySelectorAll(".colleague-ask")
        for i in range(buttons.length):
            dom.on(buttons.item(i), "click", self._asker(buttons.item(i)))
        dom.on(el("nav-conversations"), "click", self.section("conversations"))
        dom.on(el("nav-account"), "click", self.section("account"))
        dom.on(el("tab-details"), "click", self.tab("details"))
        dom.on(el("tab-share"), "click", self.tab("share"))
        dom.on(el("tab-details"), "keydown", self.tab_keys)
        dom.on(el("tab-share"), "keydown", self.tab_keys)

    def _reply_keys(self, event):
        if str(event.key) == "Enter" and not event.shiftKey:
            self.send_reply(event)


def _session_get(key):
    try:
        value = js.window.sessionStorage.getItem(key)
        return None if ffi.is_none(value) else str(value)
    except Exception:  # storage may be disabled
        return None


def _session_set(key, value):
    try:
        js.window.sessionStorage.setItem(key, value)
    except Exception:
        pass


app = Console()
app.wire()
app.channel.connect()
asyncio.create_task(app.stats_loop())
asyncio.create_task(app.key_loop())
js.document.body.dataset.ready = "1"
