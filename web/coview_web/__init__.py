"""Coview's browser-side Python (runs on MicroPython and Pyodide through PyScript)."""
