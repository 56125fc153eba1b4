"""The network check page (MicroPython): WebSocket, STUN, TURN/UDP, TURN/TCP, relay, capture.

Each check runs in turn, shows its result live in the list and ends by its timeout at the
latest; then the verdict and the report for support. The logic lives in
:mod:`coview.netcheck`; this file only observes the browser.
"""

import asyncio
import json

import js

from coview import netcheck as N
from coview.useragent import parse as parse_ua
from coview_web import dom, ffi, media, stats

TIMEOUT_MS = 5000.0
POLL_S = 0.05

verdict_el = dom.by_id("verdict")
report_el = dom.by_id("report")
copy_button = dom.by_id("copy")
copy_status = dom.by_id("copy-status")

results = {}
for _check in N.CHECKS:
    results[_check] = {"status": "waiting", "detail": ""}


def _item(check):
    return js.document.querySelector('#checks li[data-check="' + check + '"]')


def show(check, status, detail=""):
    results[check] = {"status": status, "detail": detail or ""}
    item = _item(check)
    item.dataset.status = status
    dom.text(item.querySelector(".check-status"), N.status_word(status))
    dom.text(item.querySelector(".check-detail"), detail or "")
    report_el.value = N.report(results, browser_text(), now_text())


def browser_text():
    ua = str(js.navigator.userAgent)
    info = parse_ua(ua)
    return info["browser"] + " on " + info["os"] + " (" + ua + ")"


def now_text():
    return str(js.Date.new().toISOString())


async def wait_until(state, timeout_ms):
    """Poll ``state["done"]`` until it is set or ``timeout_ms`` passed; returns elapsed ms."""
    started = ffi.monotonic_ms()
    # Polling, not asyncio.Event/wait_for: the one pattern known to work on both
    # interpreters' asyncio (MicroPython's runs on js.setTimeout).
    while not state["done"] and ffi.monotonic_ms() - started < timeout_ms:  # noqa: ASYNC110
        await asyncio.sleep(POLL_S)
    return ffi.monotonic_ms() - started


# --- (1) WebSocket -------------------------------------------------------------------------


async def check_websocket():
    state = {"done": False, "text": None, "error": None}
    loc = js.window.location
    scheme = "wss:" if str(loc.protocol) == "https:" else "ws:"
    try:
        ws = await ffi.new_async(js.WebSocket, scheme + "//" + str(loc.host) + "/ws")
    except Exception as exc:
        return N.websocket_outcome(
            None, "The browser refused to open it: " + ffi.js_error_text(exc)
        )
    unsubscribe = []

    def opened(event):
        # Not a handshake: the server answers "handshake_required" and records nothing.
        ws.send(json.dumps({"type": "ping"}))

    def received(event):
        if not state["done"]:
            state["text"] = str(event.data)
            state["done"] = True

    def closed(event):
        if not state["done"]:
            code = ffi.prop(event, "code", 0)
            state["error"] = (
                "The connection closed before the server answered (code " + str(code) + ")."
            )
            state["done"] = True

    unsubscribe.append(ffi.add_listener(ws, "open", opened))
    unsubscribe.append(ffi.add_listener(ws, "message", received))
    unsubscribe.append(ffi.add_listener(ws, "close", closed))
    elapsed = await wait_until(state, TIMEOUT_MS)
    for off in unsubscribe:
        off()
    try:
        ws.close(1000)
    except Exception:
        pass
    if not state["done"]:
        return "fail", "No answer from the server within " + str(int(elapsed)) + " ms."
    status, detail = N.websocket_outcome(state["text"], state["error"])
    if status == "pass":
        detail = detail[:-1] + " in " + str(int(elapsed)) + " ms."
    return status, detail


# --- (2)-(4) ICE gathering -----------------------------------------------------------------


async def gather(kind, servers):
    """Gather candidates with only ``servers``; returns ``(status, detail)``."""
    if not servers:
        return N.ice_outcome(kind, False, [], [], True, 0.0)
    config = {"iceServers": servers}
    if kind != N.STUN:
        config["iceTransportPolicy"] = "relay"
    state = {"done": False, "finished": False}
    candidates = []
    errors = []
    started = ffi.monotonic_ms()
    try:
        pc = await ffi.new_async(js.RTCPeerConnection, config)
    except Exception as exc:
        return N.ice_outcome(kind, True, [], [], True, 0.0, ffi.js_error_text(exc))

    def on_candidate(event):
        cand = ffi.prop(event, "candidate")
        if cand is None:
            state["finished"] = True
            state["done"] = True
            return
        relay_protocol = ffi.prop(cand, "relayProtocol")
        parsed = N.parse_candidate(
            str(ffi.prop(cand, "candidate", "")),
            None if relay_protocol is None else str(relay_protocol),
        )
        if parsed is not None:
            candidates.append(parsed)
            if N.matching(candidates, kind) is not None:
                state["done"] = True

    def on_error(event):
        code = ffi.prop(event, "errorCode")
        text = str(ffi.prop(event, "errorText", ""))
        url = str(ffi.prop(event, "url", ""))
        errors.append(
            (url + ": " if url else "") + (str(code) + " " if code is not None else "") + text
        )

    def on_gathering(event):
        if str(pc.iceGatheringState) == "complete":
            state["finished"] = True
            state["done"] = True

    offs = [
        ffi.add_listener(pc, "icecandidate", on_candidate),
        ffi.add_listener(pc, "icecandidateerror", on_error),
        ffi.add_listener(pc, "icegatheringstatechange", on_gathering),
    ]
    failure = None
    try:
        pc.createDataChannel("check")
        offer = await ffi.call_async(pc, "createOffer")
        await ffi.call_async(pc, "setLocalDescription", offer)
    except Exception as exc:
        failure = ffi.js_error_text(exc)
        state["done"] = True
    remaining = TIMEOUT_MS - (ffi.monotonic_ms() - started)
    await wait_until(state, max(remaining, 0.0))
    elapsed = ffi.monotonic_ms() - started
    for off in offs:
        off()
    try:
        pc.close()
    except Exception:
        pass
    return N.ice_outcome(kind, True, candidates, errors, state["finished"], elapsed, failure)


async def fetch_ice():
    """``(ice_servers, error)`` from ``/check/ice`` (fresh TURN credentials)."""
    try:
        response = await ffi.call_async(
            js.window, "fetch", "/check/ice", {"cache": "no-store", "credentials": "same-origin"}
        )
        if not response.ok:
            return [], "the server answered HTTP " + str(response.status)
        text = await ffi.call_async(response, "text")
        data = json.loads(str(text))
        return data.get("ice_servers") or [], None
    except Exception as exc:
        return [], ffi.js_error_text(exc)


# --- (5) the media relay: a short test call -------------------------------------------


async def _frames_decoded(pc):
    total = 0.0
    for entry in await stats.snapshot(pc):
        if entry.get("type") == "inbound-rtp":
            total += entry.get("framesDecoded", 0.0)
    return total


async def check_relay(ice):
    """Offer to receive video, POST the offer (all candidates in it) to ``/check/relay``,
    and wait for the relay's test picture to decode."""
    started = ffi.monotonic_ms()
    try:
        pc = await ffi.new_async(js.RTCPeerConnection, {"iceServers": ice})
    except Exception as exc:
        return N.relay_outcome(None, ffi.js_error_text(exc), 0, 0.0)
    status = None
    error = None
    frames = 0.0
    gathered = {"done": False}

    def on_gathering(event):
        if str(pc.iceGatheringState) == "complete":
            gathered["done"] = True

    off = ffi.add_listener(pc, "icegatheringstatechange", on_gathering)
    try:
        pc.addTransceiver("video", ffi.to_js({"direction": "recvonly"}))
        offer = await ffi.call_async(pc, "createOffer")
        await ffi.call_async(pc, "setLocalDescription", offer)
        # The relay does not trickle: it needs every candidate in the offer.
        await wait_until(gathered, TIMEOUT_MS)
        response = await ffi.call_async(
            js.window,
            "fetch",
            "/check/relay",
            {
                "method": "POST",
                "cache": "no-store",
                "credentials": "same-origin",
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"sdp": str(pc.localDescription.sdp)}),
            },
        )
        status = int(response.status)
        text = str(await ffi.call_async(response, "text"))
        data = json.loads(text) if text else {}
        if status != 200:
            error = str(data.get("error") or "")
        else:
            await ffi.call_async(pc, "setRemoteDescription", {"type": "answer", "sdp": data["sdp"]})
            while ffi.monotonic_ms() - started < 2 * TIMEOUT_MS:
                frames = await _frames_decoded(pc)
                if frames > 0:
                    break
                await asyncio.sleep(0.2)
    except Exception as exc:
        error = ffi.js_error_text(exc)
    off()
    try:
        pc.close()
    except Exception:
        pass
    return N.relay_outcome(status, error, frames, ffi.monotonic_ms() - started)


# --- the run -------------------------------------------------------------------------------


async def run():
    dom.text(verdict_el, "Checking…")
    show(N.WEBSOCKET, "running")
    status, detail = await check_websocket()
    show(N.WEBSOCKET, status, detail)

    ice, problem = await fetch_ice()
    for kind in (N.STUN, N.TURN_UDP, N.TURN_TCP):
        if problem:
            show(kind, "fail", "Could not get the server list from Coview: " + problem)
            continue
        show(kind, "running")
        status, detail = await gather(kind, N.servers_for(ice, kind))
        show(kind, status, detail)

    show(N.RELAY, "running")
    status, detail = await check_relay(ice)
    show(N.RELAY, status, detail)

    show(N.CAPTURE, "running")
    can, reason = media.can_capture()
    if can:
        show(N.CAPTURE, "pass", "This browser supports screen sharing.")
    else:
        show(N.CAPTURE, "fail", reason)

    outcome = N.verdict(results)
    verdict_el.dataset.level = outcome["level"]
    dom.text(verdict_el, outcome["text"])
    report_el.value = N.report(results, browser_text(), now_text(), outcome["text"])
    dom.enable(copy_button, True)
    js.document.body.dataset.done = "1"


async def on_copy(event):
    dom.text(copy_status, "")
    text = str(report_el.value)
    clipboard = ffi.prop(js.navigator, "clipboard")
    try:
        if clipboard is None:
            raise ffi.JsError("the clipboard is not available on this page")
        await ffi.call_async(clipboard, "writeText", text)
    except Exception as exc:
        report_el.focus()
        report_el.select()
        dom.text(
            copy_status,
            "Copying was not allowed ("
            + ffi.js_error_text(exc)
            + "). The report is selected: press Ctrl+C (Cmd+C on a Mac) to copy it.",
        )
        return
    dom.text(copy_status, "Report copied. Paste it into your message to support.")


dom.on(copy_button, "click", on_copy)
report_el.value = N.report(results, browser_text(), now_text())
js.document.body.dataset.ready = "1"
asyncio.create_task(run())
