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
SURFACE_WORDS = {
    "monitor": "entire screen",
    "window": "a window",
    "browser": "a browser tab",
    "unknown": "a screen",
}


class Console:
    def __init__(self):
        self.conversations = {}  # id -> item
        self.current = None  # conversation id on screen
        self.records = {}
        self.seen = {}
        self.shares = {}  # share id -> {"conversation","state","reason","peer","stream",...}
        self.watching = {}
        self.counter = 0
        self.ice = []
        self.ice_policy = "all"
        self.me = {"id": None, "role": "agent"}
        self.channel = Channel("agent", None, self.on_message, self.on_status)

    # -- socket -------------------------------------------------------------------------

    def on_status(self, value):
        words = {
            "connecting": "Connecting…",
            "open": "Connected",
            "closed": "Disconnected: reload the page to reconnect.",
        }
        dom.text(el("conn-status"), words.get(value, value))
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

    def on_error(self, msg):
        dom.text(el("conn-status"), msg["text"])
        if msg.get("ref") in (None, "share_request") and self.current is not None:
            dom.text(el("share-reason"), msg["text"])

    # -- conversations ------------------------------------------------------------------

    def on_conversations(self, msg):
        self.conversations = {}
        for item in msg["items"]:
            self.conversations[item["id"]] = item
        self.render_list()

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
                dom.text(el("conn-status"), "That conversation was taken by another agent.")
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

    def render_record(self):
        rec = self.records.get(self.current) or {}
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

    def stop_share(self, event):
        share_id, info = self.share_of_current()
        if share_id is not None:
            self.channel.send(P.make("share_stop", share=share_id))

    def on_share_state(self, msg):
        share_id = msg["share"]
        info = self.shares.get(share_id)
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
        if msg["state"] in ("accepted", "waiting", "live") and not info["watched"]:
            # Activate our side of the connection: the visitor's window will offer to us.
            info["watched"] = True
            self.channel.send(P.make("share_watch", share=share_id))
        if msg["state"] == "ended":
            self._drop_peer(share_id)
            info["ended_note"] = END_WORDS.get(msg.get("reason") or "", "The share ended.")
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

        def on_track(stream):
            info["stream"] = stream
            if info["conversation"] == self.current:
                self.render_share()

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

    def _drop_peer(self, share_id):
        info = self.shares.get(share_id)
        if info is None:
            return
        if info["peer"] is not None:
            info["peer"].close()
            info["peer"] = None
        info["stream"] = None
        info["prev"] = None

    def render_share(self):
        rec = self.records.get(self.current) or {}
        share_id, info = self.share_of_current()
        request = el("share-request")
        video = el("remote")
        if info is None:
            ended = getattr(self, "last_ended", None)
            text = "No screen share."
            if ended is not None and ended[0] == self.current:
                text = "Ended: " + ended[1]
            dom.text(el("share-state"), text)
            dom.show(request, True)
            allowed = bool(rec.get("can_share"))
            dom.enable(request, allowed)
            reason = "" if allowed else (rec.get("share_reason") or "The visitor cannot share.")
            dom.text(el("share-reason"), reason)
            dom.show(el("share-stop"), False)
            dom.show(el("fullscreen"), False)
            dom.show(el("stage"), False)
            dom.show(el("quality"), False)
            video.srcObject = None
            return
        words = STATE_WORDS.get(info["state"], info["state"])
        if info["state"] == "live" and info.get("surface"):
            words += " They share " + SURFACE_WORDS.get(info["surface"], "a screen") + "."
        if info.get("note"):
            words += " " + info["note"]
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
                if q["path"] != info["path"] and q["path"] != "unknown":
                    info["path"] = q["path"]
                    self.channel.send(P.make("share_path", share=share_id, path=q["path"]))
                if q["frames_decoded"] is not None:
                    el("stage").dataset.framesDecoded = str(q["frames_decoded"])
                if info["conversation"] == self.current:
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
        dom.on(el("share-request"), "click", self.request_share)
        dom.on(el("share-stop"), "click", self.stop_share)
        dom.on(el("fullscreen"), "click", self.fullscreen)
        dom.on(el("nav-conversations"), "click", self.section("conversations"))
        dom.on(el("nav-account"), "click", self.section("account"))
        dom.on(el("tab-details"), "click", self.tab("details"))
        dom.on(el("tab-share"), "click", self.tab("share"))
        dom.on(el("tab-details"), "keydown", self.tab_keys)
        dom.on(el("tab-share"), "keydown", self.tab_keys)

    def _reply_keys(self, event):
        if str(event.key) == "Enter" and not event.shiftKey:
            self.send_reply(event)


app = Console()
app.wire()
app.channel.connect()
asyncio.create_task(app.stats_loop())
js.document.body.dataset.ready = "1"
