"""The one place where Coview's browser code touches JavaScript.

Every other module of ``coview_web`` imports JS things from here, never ``js``, ``jsffi`` or
``pyodide.ffi`` directly, so the differences between PyScript's two interpreters stay in this
file. It uses the interpreters' own FFI modules, not ``pyscript.ffi``: our pages boot without
PyScript's Python package, which cost 100-200 ms per page load (scripts/build_assets.py).
Written to the subset MicroPython 1.28 understands (no dataclasses, no runtime typing, no
walrus in comprehensions, no f-string ``=``).

Differences hidden here (measured with PyScript 0.7.31, MicroPython 1.28, Pyodide 314):

* JS ``null`` is ``jsnull`` on Pyodide and ``None`` on MicroPython; JS ``undefined`` is ``None``
  on Pyodide and a special ``undefined`` object on MicroPython.            -> ``is_none``
* A missing JS property raises ``AttributeError`` on both.                   -> ``prop``
* ``len(js_array)`` fails on MicroPython; ``js_obj["k"] = v`` fails on Pyodide.
                                                               -> ``length``, ``set_prop``
* ``to_js(dict)`` makes a ``Map`` on bare Pyodide, and Pyodide turns ``None`` into
  ``undefined`` (dropped by ``JSON.stringify``) where MicroPython makes ``null``.  -> ``to_js``
* JS integers crossing into MicroPython are wrapped to int32 (``Date.now()`` is garbage).
                                                                          -> ``now_ms``
* Pyodide destroys borrowed callback proxies after the call; only ``create_proxy`` ones
  survive, and they leak until ``destroy()``.          -> ``create_proxy``, ``release_all``
* ``js.addEventListener`` breaks on MicroPython once an element listener exists; the
  ``js.window`` one works on both.                                    -> ``add_listener``
* A rejected promise raises ``JsException`` whose shape differs (Pyodide: ``.name`` and
  ``.message``; MicroPython: ``args == (error, name, message)``).
                                          -> ``await_js`` raises ``JsError``, ``js_error_text``
* Pyodide 314 turns a JS promise into a ``PyodideFuture`` as soon as it reaches Python, and
  such a future never completes if the promise rejects with a non-Error value (a string).
                                   -> ``call_async`` keeps the promise in JS until it settled
* On MicroPython a JS exception thrown *synchronously* by a JS call cannot be caught by
  ``try``/``except``: it skips the rest of the running Python code.  -> ``call_async``
* On MicroPython, once a JS function was called as a method of some object from Python
  (``window.setTimeout(...)``, ``el.addEventListener(...)``), calling the same function through
  the ``js`` module (``js.setTimeout(...)``) throws "Illegal invocation" (uncatchable, see
  above). MicroPython's own ``asyncio`` calls ``js.setTimeout``/``js.clearTimeout``, so a single
  ``window.setTimeout(...)`` from Python breaks every later ``await asyncio.sleep()``.
  -> ``set_timeout``/``clear_timeout``/``set_interval``/``clear_interval`` (always ``js.X``),
  ``add_listener`` (always ``target.addEventListener``). Never call timers through ``window``.
* On MicroPython a JS function read as an attribute of an object (``window.URL``,
  ``navigator.mediaDevices.getDisplayMedia``) is a Python ``bound_method``: calling it works,
  but passed back to JS it arrives as a wrapper, not as the function (``new`` fails, its
  static members are gone). Attributes of the ``js`` module itself are plain proxies.
  -> read globals as ``ffi.js.Name`` (``ffi.js.URL``, ``ffi.js.Promise``), not ``window.Name``.
"""

import json
import sys

import js

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

IS_MICROPYTHON = sys.implementation.name == "micropython"
INTERPRETER = "micropython" if IS_MICROPYTHON else "pyodide"

# ``ffi.js`` (the module imported above) is the JS global scope: read globals from it
# (``ffi.js.RTCPeerConnection``), not from ``window`` (see the module docstring).
window = js.window
document = js.document

if IS_MICROPYTHON:
    from jsffi import create_proxy as _create_proxy, to_js as _to_js

    _JSNULL = None  # MicroPython hands JS null over as None
    _UNDEFINED = js.undefined  # a singleton of class "undefined"
    _UNDEFINED_TYPE = type(_UNDEFINED)
else:
    from pyodide.ffi import (
        JsProxy as _PyodideJsProxy,
        create_proxy as _create_proxy,
        jsnull as _PYODIDE_JSNULL,
        to_js as _pyodide_to_js,
    )

    def _to_js(value: "Any") -> "Any":
        return _pyodide_to_js(value, dict_converter=js.Object.fromEntries)

    _JSNULL = _PYODIDE_JSNULL
    _UNDEFINED = None  # Pyodide hands JS undefined over as None
    _UNDEFINED_TYPE = type(None)

_PY_SCALARS = (bool, int, float, str)
_proxies: "list[Any]" = []
_timers: "dict[Any, Any]" = {}


class JsError(Exception):
    """A JS error (or any rejection reason) seen from Python, the same on both interpreters.

    ``name`` and ``message`` are Python strings (``name`` is ``""`` when the reason was not an
    Error object, e.g. ``Promise.reject("text")``); ``js_error`` is the original reason.
    """

    def __init__(self, reason: "Any") -> "None":
        self.js_error = reason
        if is_js(reason):
            self.name = _text(prop(reason, "name", ""))
            self.message = _text(prop(reason, "message", ""))
            if not self.name and not self.message:
                self.message = _text(js.String(reason))
        else:
            self.name = ""
            self.message = "" if is_none(reason) else _text(reason)
        super().__init__(self.text())

    def text(self) -> "str":
        if self.name and self.message:
            return self.name + ": " + self.message
        return self.name or self.message


def _text(value: "Any") -> "str":
    return "" if is_none(value) else str(value)


def is_js(value: "Any") -> "bool":
    """Whether ``value`` is a proxy of a JS object (not a Python value, not null/undefined)."""
    if value is None or isinstance(value, _PY_SCALARS) or is_none(value):
        return False
    if IS_MICROPYTHON:
        return type(value).__name__ == "JsProxy"
    return isinstance(value, _PyodideJsProxy)


def is_none(value: "Any") -> "bool":
    """True for Python ``None``, JS ``null`` and JS ``undefined``, on both interpreters."""
    if value is None or value is _JSNULL or value is _UNDEFINED:
        return True
    return IS_MICROPYTHON and type(value) is _UNDEFINED_TYPE


def _nulls(value: "Any") -> "Any":
    """Copy of a Python structure with ``None`` replaced by Pyodide's ``jsnull``."""
    if value is None:
        return _JSNULL
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[k] = _nulls(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_nulls(v) for v in value]
    return value


def to_js(obj: "Any") -> "Any":
    """Python value -> JS value: dicts become plain Objects, lists/tuples Arrays,
    ``None`` becomes ``null`` (also inside containers), on both interpreters.
    JS proxies pass through unchanged."""
    if is_js(obj):
        return obj
    if not IS_MICROPYTHON:
        obj = _nulls(obj)
        if obj is _JSNULL:
            return obj
    return _to_js(obj)


def _arg(value: "Any") -> "Any":
    """Convert an argument for a JS call: containers and None through ``to_js``."""
    if value is None or isinstance(value, (dict, list, tuple)):
        return to_js(value)
    return value


def to_py(obj: "Any") -> "Any":
    """JS value -> plain Python data (dict / list / str / float / int / bool / None).

    JSON-compatible data only, through ``JSON.stringify`` on the JS side, so both interpreters
    give the same result (and large integers survive, which they do not across MicroPython's
    FFI). A ``Map`` or map-like (``RTCStatsReport``) at the top becomes a dict first; nested
    maps, functions and ``undefined`` members are dropped as JSON drops them. Python values are
    returned as they are.
    """
    if is_none(obj):
        return None
    if not is_js(obj):
        return obj
    if not js.Array.isArray(obj) and _is_function(prop(obj, "entries")):
        if not is_none(prop(obj, "size")):
            obj = js.Object.fromEntries(obj)
    text = js.JSON.stringify(obj)
    if is_none(text):
        return None
    return json.loads(str(text))


def _is_function(value: "Any") -> "bool":
    return is_js(value) and str(js.Object.prototype.toString.call(value)) == "[object Function]"


def create_proxy(fn: "Callable[..., Any]") -> "Any":
    """A JS function calling ``fn`` that stays valid until ``release``/``release_all``."""
    proxy = _create_proxy(fn)
    _proxies.append(proxy)
    return proxy


def release(proxy: "Any") -> "None":
    """Forget a proxy made by ``create_proxy`` (and destroy it on Pyodide). Idempotent."""
    for i in range(len(_proxies)):
        if _proxies[i] is proxy:
            del _proxies[i]
            break
    else:
        return
    if not IS_MICROPYTHON:
        try:
            proxy.destroy()
        except Exception:  # already destroyed
            pass


def release_all() -> "int":
    """Release every proxy still held (e.g. on ``pagehide``); returns how many."""
    count = len(_proxies)
    while _proxies:
        release(_proxies[-1])
    return count


def live_proxies() -> "int":
    return len(_proxies)


def prop(obj: "Any", name: "str", default: "Any" = None) -> "Any":
    """``obj[name]``, or ``default`` when it is missing, ``undefined`` or ``null``.

    Reads JS objects with ``Reflect.get`` (no ``AttributeError``, no clash with Python
    attribute names); dicts with ``get``; other Python objects with ``getattr``.
    """
    if is_none(obj) or isinstance(obj, _PY_SCALARS):
        return default
    if isinstance(obj, dict):
        value = obj.get(name, default)
    elif is_js(obj):
        value = js.Reflect.get(obj, name)
    else:
        value = getattr(obj, name, default)
    return default if is_none(value) else value


def set_prop(obj: "Any", name: "str", value: "Any") -> "None":
    """``obj[name] = value`` on a JS object; dicts/lists/None are converted with ``to_js``."""
    js.Reflect.set(obj, name, _arg(value))


def length(seq: "Any") -> "int":
    """Length of a JS array/array-like (``.length``) or of a Python sequence."""
    if isinstance(seq, (list, tuple, dict, str, bytes)):
        return len(seq)
    return int(seq.length)


def array_from(items: "Any") -> "Any":
    """``Array.from(items)`` for a JS iterable/array-like; a Python list/tuple via ``to_js``."""
    if isinstance(items, (list, tuple)):
        return to_js(list(items))
    return getattr(js.Array, "from")(items)


def _days_from_civil(y: "int", m: "int", d: "int") -> "int":
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def iso_to_ms(iso: "str") -> "float":
    """Epoch milliseconds of a ``Date.prototype.toISOString()`` string (UTC, ``Z``)."""
    date, _, clock = iso.rstrip("Z").partition("T")
    sign = 1
    if date[0] in "+-":
        sign = -1 if date[0] == "-" else 1
        date = date[1:]
    y, mo, d = date.split("-")
    h, mi, s = clock.split(":")
    sec, _, frac = s.partition(".")
    days = _days_from_civil(sign * int(y), int(mo), int(d))
    ms = int((frac + "000")[:3]) if frac else 0
    return (
        float(days) * 86400000.0
        + int(h) * 3600000.0
        + int(mi) * 60000.0
        + int(sec) * 1000.0
        + float(ms)
    )


def now_ms() -> "float":
    """``Date.now()`` as a float on both interpreters (MicroPython would wrap it to int32)."""
    if IS_MICROPYTHON:
        return iso_to_ms(str(js.Date.new().toISOString()))
    return float(js.Date.now())


def monotonic_ms() -> "float":
    """``performance.now()``: milliseconds since the page started (safe on both)."""
    return float(js.performance.now())


def add_listener(
    target: "Any", event: "str", fn: "Callable[..., Any]", options: "Any" = None
) -> "Callable[[], None]":
    """``target.addEventListener(event, proxy(fn), options)``; returns an unsubscribe callable.

    ``target=None`` means ``window``, reached as ``js.window`` (``js.addEventListener`` breaks
    on MicroPython once an element has a listener). Calling the unsubscribe removes the listener
    and releases the proxy; calling it again does nothing.
    """
    if target is None:
        target = js.window
    proxy = create_proxy(fn)
    opts = None if options is None else to_js(options)
    if opts is None:
        target.addEventListener(event, proxy)
    else:
        target.addEventListener(event, proxy, opts)
    state = [True]

    def unsubscribe() -> "None":
        if not state[0]:
            return
        state[0] = False
        if opts is None:
            target.removeEventListener(event, proxy)
        else:
            target.removeEventListener(event, proxy, opts)
        release(proxy)

    return unsubscribe


def set_timeout(fn: "Callable[[], Any]", delay_ms: "float" = 0) -> "Any":
    """``setTimeout(fn, delay_ms)``; returns the timer id for ``clear_timeout``.

    ``fn`` is a Python callable (its proxy is released once it ran or was cleared) or a JS
    function. Calls ``js.setTimeout`` exactly as MicroPython's asyncio does (see module doc).
    """
    if is_js(fn):
        return js.setTimeout(fn, delay_ms)
    cell: list[Any] = []

    def fire() -> "None":
        proxy = _timers.pop(cell[0], None)
        try:
            fn()
        finally:
            if proxy is not None:
                release(proxy)

    proxy = create_proxy(fire)
    timer = js.setTimeout(proxy, delay_ms)
    cell.append(timer)
    _timers[timer] = proxy
    return timer


def clear_timeout(timer: "Any") -> "None":
    js.clearTimeout(timer)
    proxy = _timers.pop(timer, None)
    if proxy is not None:
        release(proxy)


def set_interval(fn: "Callable[[], Any]", delay_ms: "float") -> "Any":
    """``setInterval(fn, delay_ms)``; the proxy lives until ``clear_interval``."""
    if is_js(fn):
        return js.setInterval(fn, delay_ms)
    proxy = create_proxy(fn)
    timer = js.setInterval(proxy, delay_ms)
    _timers[timer] = proxy
    return timer


def clear_interval(timer: "Any") -> "None":
    js.clearInterval(timer)
    proxy = _timers.pop(timer, None)
    if proxy is not None:
        release(proxy)


async def await_js(promise: "Any") -> "Any":
    """Await a JS promise (or any value); a rejection raises ``JsError`` on both interpreters.

    MicroPython: goes through ``Promise.allSettled``, so the promise never rejects into the
    interpreter. Pyodide 314 turns every promise into a ``PyodideFuture`` the moment it
    crosses into Python: that is awaited and its ``JsException`` re-raised as ``JsError``.
    Such a future never completes if the promise rejects with a non-Error value (a string):
    Pyodide fails inside its own callback. ``call_async`` keeps the promise on the JS side
    and has no such hole: prefer it for calls whose promise may reject with anything.
    """
    if not IS_MICROPYTHON and not is_js(promise) and hasattr(promise, "__await__"):
        try:
            value = await promise
        except Exception as exc:
            if type(exc).__name__ == "JsException":
                raise JsError(getattr(exc, "js_error", None)) from None
            raise
        return None if is_none(value) else value
    return await _settle(js.Array.of(promise))


async def _settle(array: "Any") -> "Any":
    """Value of the first promise (or value) of a JS array, or ``JsError`` if it rejected."""
    settled = await js.Promise.allSettled(array)
    outcome = settled[0]
    if str(outcome.status) == "fulfilled":
        return prop(outcome, "value")
    raise JsError(prop(outcome, "reason"))


def _args_array(args: "tuple[Any, ...]") -> "Any":
    return js.Array.of(*[_arg(a) for a in args])


async def call_async(obj: "Any", method: "str", *args: "Any") -> "Any":
    """``await obj[method](*args)`` that turns every failure into ``JsError``.

    For JS calls that may throw synchronously (``JSON.parse``, ``new URL``...) or return a
    promise that may reject with anything. On MicroPython a synchronous throw cannot be caught
    in Python at all; here the call runs inside a promise job, where it becomes a rejection. On
    Pyodide the returned promise never crosses into Python before it has settled. Dicts, lists
    and None in ``args`` go through ``to_js``. Returns the (awaited) result.
    """
    fn = js.Reflect.get(obj, method)
    apply = js.Reflect.apply.bind(None, fn, obj)  # apply(argsArray) == obj[method](...args)
    if IS_MICROPYTHON:
        return await _settle(js.Array.of(js.Promise.resolve(_args_array(args)).then(apply)))
    try:
        # map() keeps the result (maybe a promise) inside a JS array: no conversion.
        results = js.Array.of(_args_array(args)).map(apply)
    except Exception as exc:
        if type(exc).__name__ == "JsException":
            raise JsError(getattr(exc, "js_error", None)) from None
        raise
    return await _settle(results)


async def new_async(cls: "Any", *args: "Any") -> "Any":
    """``new cls(*args)``, with any throw raised as ``JsError`` (see ``call_async``)."""
    construct = js.Reflect.construct.bind(None, cls)  # construct(argsArray) == new cls(...)
    if IS_MICROPYTHON:
        return await _settle(js.Array.of(js.Promise.resolve(_args_array(args)).then(construct)))
    try:
        return js.Reflect.construct(cls, _args_array(args))
    except Exception as exc:
        if type(exc).__name__ == "JsException":
            raise JsError(getattr(exc, "js_error", None)) from None
        raise


def js_error_text(exc: "BaseException") -> "str":
    """``"Name: message"`` for a JS error seen as a Python exception, on both interpreters.

    Handles ``JsError``, Pyodide's ``JsException`` (``.name``/``.message``), MicroPython's
    ``JsException`` (``args == (error, name, message)``) and, for anything else,
    ``"<exception class>: <str(exc)>"``.
    """
    if isinstance(exc, JsError):
        return exc.text()
    if type(exc).__name__ == "JsException":
        if IS_MICROPYTHON:
            args = exc.args
            name = _text(args[1]) if len(args) > 1 else ""
            message = _text(args[2]) if len(args) > 2 else ""
            if not name and not message and args:
                message = _text(args[0])
        else:
            name = _text(getattr(exc, "name", ""))
            message = _text(getattr(exc, "message", ""))
        if name and message:
            return name + ": " + message
        return name or message or str(exc)
    text = str(exc)
    return type(exc).__name__ + (": " + text if text else "")
