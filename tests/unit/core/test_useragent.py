"""User agents as real browsers send them, and the share verdict for each."""

import pytest

from coview.useragent import parse, share_verdict

CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/123.0.6312.122 Safari/537.36"
)
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
CHROMEOS = (
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
FIREFOX_WIN = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
FIREFOX_LINUX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0"
FIREFOX_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0"
EDGE_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"
)
OPERA_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/123.0.0.0 Safari/537.36 OPR/109.0.0.0"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Safari/605.1.15"
)
HEADLESS_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/124.0.6367.29 Safari/537.36"
)
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
CHROME_ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
SAMSUNG_ANDROID = (
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36"
)
FIREFOX_ANDROID = "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1"
)
CHROME_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1"
)
FIREFOX_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15"
)
SAFARI_IPAD_OLD = (
    "Mozilla/5.0 (iPad; CPU OS 12_5_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/12.1.2 Mobile/15E148 Safari/604.1"
)

DESKTOP = [
    (CHROME_WIN, "Chrome 124", "Windows"),
    (CHROME_MAC, "Chrome 123", "macOS"),
    (CHROME_LINUX, "Chrome 124", "Linux"),
    (CHROMEOS, "Chrome 124", "ChromeOS"),
    (FIREFOX_WIN, "Firefox 125", "Windows"),
    (FIREFOX_LINUX, "Firefox 124", "Linux"),
    (FIREFOX_MAC, "Firefox 125", "macOS"),
    (EDGE_WIN, "Edge 124", "Windows"),
    (OPERA_WIN, "Opera 109", "Windows"),
    (SAFARI_MAC, "Safari 17", "macOS"),
    (HEADLESS_CHROME, "Chrome 124", "Linux"),
]
MOBILE = [
    (CHROME_ANDROID, "Chrome 124", "Android"),
    (CHROME_ANDROID_TABLET, "Chrome 124", "Android"),
    (SAMSUNG_ANDROID, "Samsung Internet 24", "Android"),
    (FIREFOX_ANDROID, "Firefox 125", "Android"),
    (SAFARI_IPHONE, "Safari 17", "iOS"),
    (CHROME_IPHONE, "Chrome 124", "iOS"),
    (FIREFOX_IPHONE, "Firefox 125", "iOS"),
    (SAFARI_IPAD_OLD, "Safari 12", "iPadOS"),
]


@pytest.mark.parametrize(("ua", "browser", "os_name"), DESKTOP)
def test_desktop_browsers(ua, browser, os_name):
    assert parse(ua) == {"browser": browser, "os": os_name, "mobile": False}
    assert share_verdict(ua, True) == (True, None)
    can, reason = share_verdict(ua, False)
    assert can is False
    assert reason == "This browser has no screen capture (getDisplayMedia is missing)."


@pytest.mark.parametrize(("ua", "browser", "os_name"), MOBILE)
def test_mobile_browsers_are_refused_before_any_request(ua, browser, os_name):
    assert parse(ua) == {"browser": browser, "os": os_name, "mobile": True}
    for has_display_media in (True, False):
        assert share_verdict(ua, has_display_media) == (
            False,
            "Mobile browsers cannot share their screen (" + os_name + ").",
        )


def test_headless_chrome_is_chrome_and_may_share():
    # The end-to-end tests drive HeadlessChrome; it must get the desktop verdict.
    assert parse(HEADLESS_CHROME)["browser"] == "Chrome 124"
    assert share_verdict(HEADLESS_CHROME, True) == (True, None)


def test_ipad_in_desktop_mode_is_refused_by_the_capability_check():
    # iPadOS Safari sends a Mac user agent; it has no getDisplayMedia, which decides.
    ipad = SAFARI_MAC
    assert parse(ipad)["mobile"] is False
    assert share_verdict(ipad, False)[0] is False


@pytest.mark.parametrize("ua", ["", "curl/8.5.0", "Mozilla/5.0", "\u2603" * 10])
def test_unknown_agents(ua):
    info = parse(ua)
    assert info["browser"] in ("Unknown browser",)
    assert info["os"] == "Unknown OS"
    assert info["mobile"] is False
    assert share_verdict(ua, True) == (True, None)
    assert share_verdict(ua, False)[0] is False


def test_browser_without_a_version():
    assert parse("Mozilla/5.0 (Windows NT 10.0) Firefox/")["browser"] == "Firefox"
    assert parse("Chromium/ (X11; Linux x86_64)")["browser"] == "Chromium"


def test_very_long_agent_is_fine():
    ua = CHROME_WIN + " x" * 500
    assert parse(ua)["browser"] == "Chrome 124"
