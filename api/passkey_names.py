"""The default name of a new passkey: the browser and the device it was created on ("Chrome on Android",
"Safari on iPhone"), in the page's language, so that a citizen's passkeys can be told apart on the account page.

Read from the request's User-Agent header (RFC 9110 section 10.1.5) and, when that names no platform, the
Sec-CH-UA-Platform client hint (WICG User-Agent Client Hints, section 3.2: a structured-header string such as
"Android"). Both are the browser's own claims and serve only as a suggestion the citizen can rename; nothing
trusts them. Without a recognisable browser or platform the name is numbered ("Passkey 2"), and a name the
person already uses gets the next free number ("Chrome on Android 2").

Pure functions: no request, no database; the route passes the headers, the person's current passkey names and
the page's translation function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

MAX_USER_AGENT = 1000
"""Only this much of the header is read: every token looked for sits well before it."""

_BROWSERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("EdgA/", "EdgiOS/", "Edg/", "Edge/"), "Edge"),
    (("OPR/", "OPiOS/", "OPT/", "Opera"), "Opera"),
    (("YaBrowser/", "YaApp_"), "Yandex Browser"),
    (("SamsungBrowser/",), "Samsung Internet"),
    (("Firefox/", "FxiOS/"), "Firefox"),
    (("CriOS/", "Chrome/"), "Chrome"),
    (("Chromium/",), "Chromium"),
    (("Safari/",), "Safari"),
)
"""Tokens of the User-Agent header, most specific first: Edge, Opera, Yandex and Samsung also say Chrome/ and
Safari/, Chrome also says Safari/, and every browser on iOS says Safari/ after its own token."""

_PLATFORMS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("iPhone", "iPod"), "iPhone"),
    (("iPad",), "iPad"),
    (("Android",), "Android"),
    (("Windows",), "Windows"),
    (("CrOS",), "ChromeOS"),
    (("Macintosh", "Mac OS X"), "Mac"),
    (("Linux", "X11"), "Linux"),
)
"""Tokens of the platform, most specific first: iOS says "like Mac OS X" and Android says Linux."""

_HINTED_PLATFORMS = {"android": "Android", "ios": "iPhone", "windows": "Windows", "macos": "Mac",
                     "chrome os": "ChromeOS", "chromeos": "ChromeOS", "chromium os": "ChromeOS", "linux": "Linux"}
"""Sec-CH-UA-Platform values (User-Agent Client Hints section 3.2) and the platform each names."""


@dataclass(frozen=True, slots=True)
class Device:
    """What the browser says about itself, as a person would name it; None for what it does not say."""

    browser: str | None
    platform: str | None


def _first(text: str, table: tuple[tuple[tuple[str, ...], str], ...]) -> str | None:
    return next((name for tokens, name in table if any(token in text for token in tokens)), None)


def device_of(user_agent: str | None, platform_hint: str | None = None) -> Device:
    """The browser and platform named by a User-Agent header, the platform else by Sec-CH-UA-Platform."""
    text = (user_agent or "")[:MAX_USER_AGENT]
    browser = _first(text, _BROWSERS)
    platform = _first(text, _PLATFORMS)
    if platform is None and platform_hint:
        platform = _HINTED_PLATFORMS.get(platform_hint[:40].strip().strip('"').strip().lower())
    return Device(browser, platform)


def _taken(names: Iterable[str]) -> set[str]:
    return {" ".join(n.split()).casefold() for n in names}


def default_passkey_name(device: Device, existing: Iterable[str], gettext: Callable[..., str]) -> str:
    """The name a new passkey gets when the citizen gives none, in the language of `gettext` (the page's
    translator): "<browser> on <platform>" (passkey.default.browser_on_platform), else the platform or the
    browser alone, else "Passkey <n>" (passkey.default.numbered) numbered after the person's passkeys. A name
    already among `existing` gets the next free number."""
    taken = _taken(existing)
    if device.browser and device.platform:
        label = gettext("passkey.default.browser_on_platform", browser=device.browser, platform=device.platform)
    else:
        label = device.platform or device.browser or ""
    if label:
        if label.casefold() not in taken:
            return label
        number = 2
        while f"{label} {number}".casefold() in taken:
            number += 1
        return f"{label} {number}"
    number = len(taken) + 1
    while (name := gettext("passkey.default.numbered", number=number)).casefold() in taken:
        number += 1
    return name
