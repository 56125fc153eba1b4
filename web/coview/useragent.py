"""What a visitor's browser is and whether it can share its screen.

The widget reports the raw user agent and whether ``getDisplayMedia`` exists; this module
turns that into the visitor record's words and the share verdict.  Mobile browsers expose
no screen capture, so they are refused before a request is ever sent.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chrome/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Version/", "Safari"),
)

_OSES = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows NT", "Windows"),
    ("CrOS", "ChromeOS"),
    ("Mac OS X", "macOS"),
    ("Macintosh", "macOS"),
    ("Linux", "Linux"),
)

_MOBILE_MARKERS = ("Mobile", "Android", "iPhone", "iPad", "iPod")


def _version_after(ua: str, marker: str) -> str:
    start = ua.find(marker)
    if start < 0:
        return ""
    start += len(marker)
    end = start
    while end < len(ua) and (ua[end].isdigit() or ua[end] == "."):
        end += 1
    return ua[start:end].split(".")[0]


def parse(ua: str) -> "dict[str, Any]":
    browser = "Unknown browser"
    for marker, name in _BROWSERS:
        if marker in ua:
            version = _version_after(ua, marker)
            browser = name + (" " + version if version else "")
            break
    os_name = "Unknown OS"
    for marker, name in _OSES:
        if marker in ua:
            os_name = name
            break
    mobile = False
    for marker in _MOBILE_MARKERS:
        if marker in ua:
            mobile = True
            break
    return {"browser": browser, "os": os_name, "mobile": mobile}


def share_verdict(ua: str, has_display_media: bool) -> "tuple[bool, str | None]":
    """(can_share, reason shown to the agent when it cannot)."""
    info = parse(ua)
    if info["mobile"]:
        return False, "Mobile browsers cannot share their screen (" + info["os"] + ")."
    if not has_display_media:
        return False, "This browser has no screen capture (getDisplayMedia is missing)."
    return True, None
