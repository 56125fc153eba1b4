"""Coview's shared core: the wire protocol and the sans-I/O state machines.

This package runs unchanged on CPython (server, tests), Pyodide (agent console) and
MicroPython (visitor pages).  It performs no I/O and never reads a clock: callers pass
``now`` in seconds.  Keep it in the subset MicroPython supports: no dataclasses, no enum,
no runtime typing, no ``__all__``.
"""

__version__ = "0.1.0"
