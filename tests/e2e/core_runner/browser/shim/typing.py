"""``typing`` for MicroPython, which has none: annotations are never evaluated there, but
``from typing import Any`` must still import.  Pyodide keeps its own (the standard library
comes first on ``sys.path``)."""


class _Special:
    def __init__(self, name):
        self.name = name

    def __getitem__(self, item):
        return self

    def __call__(self, *args, **kwargs):
        return args[0] if args else None

    def __repr__(self):
        return "typing." + self.name


Any = _Special("Any")
Callable = _Special("Callable")
Iterable = _Special("Iterable")
Iterator = _Special("Iterator")
Optional = _Special("Optional")
Union = _Special("Union")
TypeVar = _Special("TypeVar")
TYPE_CHECKING = False


def cast(kind, value):
    return value
