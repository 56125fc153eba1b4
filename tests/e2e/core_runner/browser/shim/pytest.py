"""``pytest`` for tests running in the browser: the parts minitest implements."""

from minitest import (
    ExceptionInfo,
    Failed,
    Marks,
    Param,
    Skipped,
    approx,
    fail,
    fixture,
    raises,
    skip,
)

__all__ = [
    "ExceptionInfo",
    "Failed",
    "approx",
    "fail",
    "fixture",
    "mark",
    "param",
    "raises",
    "skip",
]

mark = Marks()


def param(*values, id=None, marks=()):
    return Param(values, id, marks)


def importorskip(name, reason=None):
    try:
        return __import__(name)
    except ImportError:
        raise Skipped(reason or "could not import " + repr(name)) from None
