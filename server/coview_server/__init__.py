"""Coview server: Starlette app, signaling hub, storage."""
