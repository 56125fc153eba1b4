"""``__future__`` for MicroPython, which has none (it never evaluates annotations anyway)."""

annotations = True
