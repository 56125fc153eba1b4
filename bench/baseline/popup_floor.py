"""The bench's PyScript floor: what ``popup.js`` does up to the enabled button, in
MicroPython, with no Coview module (bench/server.py runs it as /popup's own page script)."""

import json

import js
import jsffi

token = None
for part in str(js.location.hash)[1:].split("&"):
    if part.startswith("t="):
        token = part[2:]
js.history.replaceState(None, "", str(js.location.pathname))
scheme = "wss:" if str(js.location.protocol) == "https:" else "ws:"
ws = js.WebSocket.new(scheme + "//" + str(js.location.host) + "/ws")


def opened(event):
    hello = {"type": "handshake", "versions": ["1"], "role": "sharer", "token": token}
    ws.send(json.dumps(hello))


def received(event):
    msg = json.loads(str(event.data))
    if msg["type"] == "welcome":
        name = msg["info"].get("agent_name") or "Support"
        by_id = js.document.getElementById
        by_id("who").textContent = name + " from support asks to see your screen."
        by_id("explain").hidden = False
        by_id("status").textContent = "Ready when you are."
        by_id("share").disabled = False
    elif msg["type"] == "ping":
        ws.send(json.dumps({"type": "pong", "t": msg.get("t")}))


ws.addEventListener("open", jsffi.create_proxy(opened))
ws.addEventListener("message", jsffi.create_proxy(received))
