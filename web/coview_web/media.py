"""Screen capture: the one place that calls ``getDisplayMedia``.

Tests and browsers differ in what they report (Firefox gives no ``displaySurface``), so
the surface is normalised to the protocol's words here (docs/browsers.md).
"""

import js

from coview_web import ffi

CAPTURE_OPTIONS = {
    "video": {"frameRate": {"ideal": 15, "max": 30}},
    "audio": False,
    "selfBrowserSurface": "include",
    "surfaceSwitching": "include",
}


def can_capture():
    """(possible, reason) for this browser, before any request is made."""
    nav = js.navigator
    devices = ffi.prop(nav, "mediaDevices")
    if ffi.is_none(devices) or ffi.is_none(ffi.prop(devices, "getDisplayMedia")):
        return False, "This browser cannot share its screen (no getDisplayMedia)."
    if ffi.is_none(ffi.prop(js.window, "RTCPeerConnection")):
        return False, "This browser has no WebRTC support."
    return True, None


async def capture():
    """Open the browser's picker; raises the JS error (NotAllowedError when cancelled)."""
    stream = await js.navigator.mediaDevices.getDisplayMedia(ffi.to_js(CAPTURE_OPTIONS))
    track = stream.getVideoTracks()[0]
    try:
        track.contentHint = "detail"
    except Exception:  # older browsers: the hint is optional
        pass
    return stream, track


def surface_of(track):
    """The protocol's word for what the track shows: monitor, window, browser or unknown.

    Firefox (ESR 153 included) reports no ``displaySurface``; its picker offers a screen or
    a window, never a tab, so a capture exactly as large as the screen is the screen."""
    settings = track.getSettings()
    surface = ffi.prop(settings, "displaySurface")
    if ffi.is_none(surface):
        return _inferred_surface(settings)
    surface = str(surface)
    return surface if surface in ("monitor", "window", "browser") else "unknown"


def _inferred_surface(settings):
    width = ffi.prop(settings, "width")
    height = ffi.prop(settings, "height")
    screen = ffi.prop(js.window, "screen")
    if ffi.is_none(width) or ffi.is_none(height) or ffi.is_none(screen):
        return "unknown"
    ratio = ffi.prop(js.window, "devicePixelRatio")
    scale = 1.0 if ffi.is_none(ratio) else float(ratio)
    full_w = float(screen.width) * scale
    full_h = float(screen.height) * scale
    if abs(float(width) - full_w) <= 1 and abs(float(height) - full_h) <= 1:
        return "monitor"
    return "unknown"


def stop_stream(stream):
    if stream is None:
        return
    tracks = stream.getTracks()
    for i in range(ffi.length(tracks)):
        tracks[i].stop()
