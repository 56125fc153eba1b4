# Runs in the browser (ffi_mpy.html on MicroPython, ffi_py.html on Pyodide) and checks every
# function of coview_web.ffi. Writes {"interpreter", "ready_ms", "checks": {name: {ok, detail}}}
# as JSON into <pre id="result">; progress goes to <pre id="progress"> for debugging.
# Only ffi is used to reach JS (globals as ffi.js.Name), as in the product code.
import asyncio
import sys

from coview_web import ffi

READY_MS = ffi.monotonic_ms()  # Python is running: the "time to Python ready" mark

w = ffi.js  # the JS global scope (on MicroPython, ffi.window.Name would be a bound method)
win = ffi.window
checks = {}


def note(name, ok, detail=""):
    checks[name] = {"ok": bool(ok), "detail": str(detail)}
    w.document.getElementById("progress").textContent = name + " " + ("ok" if ok else "FAIL")


def equal(name, got, want):
    note(name, got == want, "got " + repr(got) + " want " + repr(want))


def run(name, fn):
    try:
        fn()
    except Exception as exc:  # a broken check must not hide the others
        note(name, False, "raised " + ffi.js_error_text(exc))


def stringify(value):
    return str(w.JSON.stringify(value))


def kind(value):
    return str(w.Object.prototype.toString.call(value))


# -- to_js -------------------------------------------------------------------------------------
def check_to_js():
    obj = ffi.to_js({"a": 1, "b": {"c": [1, None, "x"]}, "n": None, "t": (True, 2.5)})
    # (MicroPython dicts do not keep insertion order: compare parsed, not text.)
    want = {"a": 1, "b": {"c": [1, None, "x"]}, "n": None, "t": [True, 2.5]}
    equal("to_js.roundtrip", ffi.to_py(obj), want)
    note("to_js.null_kept", '"n":null' in stringify(obj), stringify(obj))
    equal("to_js.plain_object", kind(obj), "[object Object]")
    note("to_js.prototype", w.Object.getPrototypeOf(obj) == w.Object.prototype)
    note("to_js.nested_plain", kind(ffi.prop(obj, "b")) == "[object Object]")
    note("to_js.list_is_array", bool(w.Array.isArray(ffi.to_js([1, 2]))))
    equal("to_js.none_is_null", stringify(ffi.to_js([None])), "[null]")
    arr = w.Array.of(1, 2)
    note("to_js.js_passthrough", ffi.to_js(arr) == arr)


# -- is_none -----------------------------------------------------------------------------------
def check_is_none():
    holder = w.JSON.parse('{"n": null}')
    note("is_none.python_none", ffi.is_none(None))
    note("is_none.js_null", ffi.is_none(w.JSON.parse("null")))
    note("is_none.js_null_member", ffi.is_none(w.Reflect.get(holder, "n")))
    note("is_none.js_undefined", ffi.is_none(w.Reflect.get(holder, "missing")))
    falsy = [0, 0.0, "", False, [], {}]
    note("is_none.falsy_values", not any(ffi.is_none(v) for v in falsy))
    note("is_none.js_object", not ffi.is_none(holder))


# -- prop / set_prop ---------------------------------------------------------------------------
class Plain:
    attr = "py"


def check_prop():
    obj = w.JSON.parse('{"a": 5, "s": "x", "n": null, "zero": 0, "f": false}')
    equal("prop.present", ffi.prop(obj, "a"), 5)
    equal("prop.missing_default", ffi.prop(obj, "nope", "dflt"), "dflt")
    equal("prop.missing_none", ffi.prop(obj, "nope"), None)
    equal("prop.null_default", ffi.prop(obj, "n", 7), 7)
    equal("prop.falsy_kept", [ffi.prop(obj, "zero", 9), ffi.prop(obj, "f", 9)], [0, False])
    equal("prop.dict", ffi.prop({"k": 1}, "k"), 1)
    equal("prop.python_object", ffi.prop(Plain(), "attr"), "py")
    equal("prop.on_none", ffi.prop(None, "x", 3), 3)
    note("prop.js_method", not ffi.is_none(ffi.prop(w.document, "getElementById")))


def check_set_prop():
    obj = w.Object.new()
    ffi.set_prop(obj, "i", 3)
    ffi.set_prop(obj, "s", "x")
    ffi.set_prop(obj, "d", {"k": [1, None]})
    ffi.set_prop(obj, "n", None)
    equal("set_prop.json", stringify(obj), '{"i":3,"s":"x","d":{"k":[1,null]},"n":null}')
    ffi.set_prop(obj, "i", 4)
    equal("set_prop.overwrite", ffi.prop(obj, "i"), 4)
    equal("set_prop.dict_plain", kind(ffi.prop(obj, "d")), "[object Object]")


# -- length / array_from -----------------------------------------------------------------------
def check_length():
    equal("length.js_array", ffi.length(w.JSON.parse("[1,2,3]")), 3)
    equal("length.empty", ffi.length(w.Array.new()), 0)
    equal("length.python_list", ffi.length([1, 2]), 2)
    equal("length.nodelist", ffi.length(w.document.querySelectorAll("pre")), 2)


def check_array_from():
    s = w.Set.new(ffi.to_js([1, 2, 2, 3]))
    arr = ffi.array_from(s)
    note("array_from.is_array", bool(w.Array.isArray(arr)))
    equal("array_from.set", stringify(arr), "[1,2,3]")
    arr2 = ffi.array_from([4, {"a": None}])
    equal("array_from.python_list", stringify(arr2), '[4,{"a":null}]')
    m = w.Map.new(ffi.to_js([["k", 1]]))
    equal("array_from.map_entries", stringify(ffi.array_from(m.entries())), '[["k",1]]')


# -- to_py -------------------------------------------------------------------------------------
def check_to_py():
    src = '{"a":1,"big":4294967301,"l":[1,"x",null,true],"o":{"k":2.5}}'
    got = ffi.to_py(w.JSON.parse(src))
    want = {"a": 1, "big": 4294967301, "l": [1, "x", None, True], "o": {"k": 2.5}}
    equal("to_py.object", got, want)
    equal("to_py.types", [type(got).__name__, type(got["l"]).__name__], ["dict", "list"])
    equal("to_py.array", ffi.to_py(w.JSON.parse("[1,[2]]")), [1, [2]])
    equal("to_py.map", ffi.to_py(w.Map.new(ffi.to_js([["a", 1], ["b", "c"]]))), {"a": 1, "b": "c"})
    equal("to_py.null", ffi.to_py(w.JSON.parse("null")), None)
    equal("to_py.python", ffi.to_py({"x": 1}), {"x": 1})
    equal("to_py.scalar", ffi.to_py(w.JSON.parse('"s"')), "s")


# -- now_ms ------------------------------------------------------------------------------------
def check_now_ms():
    t1 = ffi.now_ms()
    # JSON.stringify on the JS side keeps the exact epoch value (no int32 wrapping).
    origin = ffi.to_py(w.performance)["timeOrigin"]
    expected = origin + ffi.monotonic_ms()
    t2 = ffi.now_ms()
    note("now_ms.float", type(t1) is float, type(t1).__name__)
    note("now_ms.epoch_range", 1.7e12 < t1 < 4.1e12, t1)
    note("now_ms.matches_clock", abs(t2 - expected) < 1000.0, str(t2) + " vs " + str(expected))
    note("now_ms.monotone", t2 >= t1, str(t1) + " " + str(t2))
    note("now_ms.iso_roundtrip", ffi.iso_to_ms("2026-11-23T17:44:58.739Z") == 1795455898739.0)
    note("now_ms.iso_epoch", ffi.iso_to_ms("1970-01-01T00:00:00.000Z") == 0.0)


# -- create_proxy / add_listener / release_all -------------------------------------------------
calls = {"el": 0, "once": 0, "win": 0, "timer": 0}


def check_listeners():
    el = w.document.getElementById("target")

    def on_el(event):
        calls["el"] += 1

    def on_once(event):
        calls["once"] += 1

    def on_win(event):
        calls["win"] += 1

    unsubscribe = ffi.add_listener(el, "probe", on_el)
    ffi.add_listener(el, "probe", on_once, {"once": True})
    # After an element listener exists, window listeners must still work (MicroPython trap).
    unsubscribe_win = ffi.add_listener(None, "probe-window", on_win)
    el.dispatchEvent(w.Event.new("probe"))
    el.dispatchEvent(w.Event.new("probe"))
    win.dispatchEvent(w.Event.new("probe-window"))
    equal("add_listener.called", calls["el"], 2)
    equal("add_listener.once", calls["once"], 1)
    equal("add_listener.window", calls["win"], 1)
    unsubscribe()
    unsubscribe()  # idempotent
    unsubscribe_win()
    el.dispatchEvent(w.Event.new("probe"))
    win.dispatchEvent(w.Event.new("probe-window"))
    equal("add_listener.unsubscribed", [calls["el"], calls["win"]], [2, 1])


async def check_create_proxy():
    def tick(*args):
        calls["timer"] += 1

    before = ffi.live_proxies()
    proxy = ffi.create_proxy(tick)
    # Called later from a promise job: the proxy must outlive this call.
    w.Promise.resolve().then(proxy)
    await asyncio.sleep(0.05)
    equal("create_proxy.kept_alive", calls["timer"], 1)
    equal("create_proxy.tracked", ffi.live_proxies(), before + 1)
    ffi.release(proxy)
    ffi.release(proxy)  # idempotent
    equal("create_proxy.release", ffi.live_proxies(), before)


async def check_timers():
    fired = []
    before = ffi.live_proxies()
    ffi.set_timeout(lambda: fired.append("t"), 0)
    cancelled = ffi.set_timeout(lambda: fired.append("never"), 30)
    ffi.clear_timeout(cancelled)
    interval = ffi.set_interval(lambda: fired.append("i"), 10)
    await asyncio.sleep(0.15)
    ffi.clear_interval(interval)
    repeats = fired.count("i")
    await asyncio.sleep(0.05)
    equal("set_timeout.fired_once", fired.count("t"), 1)
    note("clear_timeout.cancelled", "never" not in fired, fired)
    note("set_interval.repeats", repeats >= 2, repeats)
    equal("clear_interval.stopped", fired.count("i"), repeats)
    equal("timers.proxies_released", ffi.live_proxies(), before)
    # asyncio's own js.setTimeout still works after all of the above (MicroPython trap).
    await asyncio.sleep(0.01)
    note("timers.asyncio_still_works", True)


# -- await_js / call_async / new_async / js_error_text -----------------------------------------
async def expect_error(name, awaitable, want_name, want_message):
    try:
        value = await asyncio.wait_for(awaitable, 3)
    except asyncio.TimeoutError:  # noqa: UP041 (MicroPython has no builtin TimeoutError)
        note(name, False, "hung")
        return
    except ffi.JsError as exc:
        ok = exc.name == want_name and (want_message is None or exc.message == want_message)
        note(name, ok, ffi.js_error_text(exc))
        return
    except Exception as exc:
        note(name, False, "wrong exception " + ffi.js_error_text(exc))
        return
    note(name, False, "resolved " + repr(value))


async def check_await_js():
    equal("await_js.resolved", await ffi.await_js(w.Promise.resolve(42)), 42)
    equal("await_js.plain_value", await ffi.await_js("x"), "x")
    equal("await_js.undefined", await ffi.await_js(w.Promise.resolve()), None)
    P = w.Promise
    await expect_error(
        "await_js.reject_error", ffi.await_js(P.reject(w.Error.new("nope"))), "Error", "nope"
    )
    await expect_error(
        "await_js.reject_domexception",
        ffi.await_js(P.reject(w.DOMException.new("denied", "NotAllowedError"))),
        "NotAllowedError",
        "denied",
    )
    # A promise rejected with a non-Error value. (Pyodide 314 hangs on awaiting such a promise
    # once it reached Python: call_async keeps it on the JS side until it settled.)
    await expect_error(
        "call_async.reject_string", ffi.call_async(P, "reject", "plain"), "", "plain"
    )
    response = await ffi.await_js(w.fetch("/_test_pages/does-not-exist"))
    equal("await_js.fetch_404", ffi.prop(response, "status"), 404)


async def check_call_async():
    got = await ffi.call_async(w.JSON, "parse", '{"a": [1]}')
    equal("call_async.value", ffi.to_py(got), {"a": [1]})
    # JSON.parse throws synchronously: uncatchable on MicroPython without call_async.
    await expect_error(
        "call_async.sync_throw", ffi.call_async(w.JSON, "parse", "{bad"), "SyntaxError", None
    )
    await expect_error(
        "call_async.rejects", ffi.call_async(win, "fetch", "http://[bad"), "TypeError", None
    )
    equal(
        "call_async.promise_result",
        ffi.prop(await ffi.call_async(win, "fetch", "/_test_pages/ffi_probe.py"), "status"),
        200,
    )
    equal(
        "call_async.dict_arg",
        str(await ffi.call_async(w.JSON, "stringify", {"k": None})),
        '{"k":null}',
    )
    url = await ffi.new_async(w.URL, "/x?y=1", "http://127.0.0.1/")
    equal("new_async.value", str(ffi.prop(url, "search")), "?y=1")
    await expect_error("new_async.sync_throw", ffi.new_async(w.URL, "not a url"), "TypeError", None)


async def check_js_error_text():
    try:
        await w.Promise.reject(w.TypeError.new("native"))  # the interpreter's own JsException
    except Exception as exc:
        equal("js_error_text.native_jsexception", ffi.js_error_text(exc), "TypeError: native")
    else:
        note("js_error_text.native_jsexception", False, "did not raise")
    equal(
        "js_error_text.jserror",
        ffi.js_error_text(ffi.JsError(w.RangeError.new("r"))),
        "RangeError: r",
    )
    equal("js_error_text.python", ffi.js_error_text(ValueError("v")), "ValueError: v")


# -- CSP: a same-origin WebSocket under connect-src 'self' -------------------------------------
async def check_websocket():
    loc = w.location
    scheme = "wss://" if str(loc.protocol) == "https:" else "ws://"
    ws = w.WebSocket.new(scheme + str(loc.host) + "/_test_ws")
    got = []
    unsubscribe = ffi.add_listener(ws, "message", lambda event: got.append(str(event.data)))
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.02)
    unsubscribe()
    ws.close()
    equal("csp.websocket_self", got, ["hello"])


async def main():
    for name, fn in (
        ("to_js", check_to_js),
        ("is_none", check_is_none),
        ("prop", check_prop),
        ("set_prop", check_set_prop),
        ("length", check_length),
        ("array_from", check_array_from),
        ("to_py", check_to_py),
        ("now_ms", check_now_ms),
        ("add_listener", check_listeners),
    ):
        run(name, fn)
    for name, coro in (
        ("create_proxy", check_create_proxy),
        ("timers", check_timers),
        ("await_js", check_await_js),
        ("call_async", check_call_async),
        ("js_error_text", check_js_error_text),
        ("csp", check_websocket),
    ):
        try:
            await coro()
        except Exception as exc:
            note(name, False, "raised " + ffi.js_error_text(exc))
    released = ffi.release_all()
    note("release_all", ffi.live_proxies() == 0, str(released) + " released")
    result = {
        "interpreter": ffi.INTERPRETER,
        "ready_ms": READY_MS,
        "done_ms": ffi.monotonic_ms(),
        "checks": checks,
        "process": process_facts(),
    }
    w.document.getElementById("result").textContent = stringify(ffi.to_js(result))


def process_facts():
    """What a restored Pyodide snapshot must not share between pages or with the build."""
    import random

    facts = {"random": random.random(), "path": list(sys.path)}
    if not ffi.IS_MICROPYTHON:
        import os

        facts["executable"] = sys.executable
        facts["env_"] = os.environ.get("_", "")
    return facts


asyncio.create_task(main())
