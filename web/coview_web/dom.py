"""Small DOM helpers shared by the three pages, on both interpreters.

Page code stays declarative: find an element, set its text, show or hide it, react to a
click.  Everything goes through ``js.document`` and :mod:`coview_web.ffi`.
"""

import js

from coview_web import ffi


def by_id(ident):
    return js.document.getElementById(ident)


def text(el, value):
    el.textContent = "" if value is None else str(value)


def show(el, visible=True):
    el.hidden = not visible


def enable(el, enabled=True):
    el.disabled = not enabled


def clear(el):
    while not ffi.is_none(el.firstChild):
        el.removeChild(el.firstChild)


def create(tag, text_value=None, cls=None, attrs=None):
    el = js.document.createElement(tag)
    if text_value is not None:
        el.textContent = str(text_value)
    if cls:
        el.className = cls
    if attrs:
        for name in attrs:
            el.setAttribute(name, str(attrs[name]))
    return el


def on(el, event, fn):
    """Attach ``fn`` (sync or async) as a listener; returns a function that detaches it."""
    return ffi.add_listener(el, event, fn)


def button(label, fn, cls=None):
    el = create("button", label, cls, {"type": "button"})
    on(el, "click", fn)
    return el


def format_time(epoch_s):
    if epoch_s is None:
        return ""
    d = js.Date.new(float(epoch_s) * 1000.0)
    hh = str(d.getHours())
    mm = str(d.getMinutes())
    return ("0" + hh)[-2:] + ":" + ("0" + mm)[-2:]
