"""The default name of a new passkey (api.passkey_names): browser and device from the User-Agent header or the
Sec-CH-UA-Platform client hint, in each page language, told apart from the person's other passkeys."""

from __future__ import annotations

import pytest

from api.i18n import translator
from api.passkey_names import MAX_USER_AGENT, Device, default_passkey_name, device_of

CHROME_ANDROID = ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
                  "Mobile Safari/537.36")
SAFARI_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "Version/17.1 Mobile/15E148 Safari/604.1")
EDGE_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0")


@pytest.mark.parametrize(("user_agent", "browser", "platform"), [
    (CHROME_ANDROID, "Chrome", "Android"),
    (SAFARI_IPHONE, "Safari", "iPhone"),
    (EDGE_WINDOWS, "Edge", "Windows"),
    (("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
      "CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1"), "Chrome", "iPhone"),
    (("Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
      "Mobile/15E148 Safari/604.1"), "Safari", "iPad"),
    (("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
      "Safari/605.1.15"), "Safari", "Mac"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0", "Firefox", "Windows"),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", "Firefox", "Linux"),
    (("Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 "
      "Chrome/115.0.0.0 Mobile Safari/537.36"), "Samsung Internet", "Android"),
    (("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 "
      "YaBrowser/23.11.0.0 Safari/537.36"), "Yandex Browser", "Windows"),
    (("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
      "Safari/537.36 OPR/106.0.0.0"), "Opera", "Windows"),
    (("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
      "Safari/537.36"), "Chrome", "ChromeOS"),
    (("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.71 "
      "Safari/537.36"), "Chrome", "Linux"),
    ("curl/8.5.0", None, None),
    ("", None, None),
    (None, None, None),
])
def test_browser_and_platform_from_the_user_agent(user_agent: str | None, browser: str | None,
                                                  platform: str | None) -> None:
    assert device_of(user_agent) == Device(browser, platform)


def test_the_client_hint_names_a_platform_the_user_agent_does_not() -> None:
    assert device_of("SomeBrowser", '"Windows"') == Device(None, "Windows")
    assert device_of(None, '"Android"') == Device(None, "Android")
    assert device_of("Chrome/120", '"macOS"') == Device("Chrome", "Mac")
    assert device_of(CHROME_ANDROID, '"Windows"') == Device("Chrome", "Android")  # the header's own word wins
    assert device_of(None, '"Unknown"') == Device(None, None)
    assert device_of(None, '"' + "x" * 5000 + '"') == Device(None, None)


def test_only_the_start_of_a_long_header_is_read() -> None:
    assert device_of("x" * MAX_USER_AGENT + " Windows Firefox/1") == Device(None, None)


@pytest.mark.parametrize(("lang", "expected"), [
    ("en", ["Chrome on Android", "Safari on iPhone", "Windows", "Firefox"]),
    ("az", ["Android cihazında Chrome", "iPhone cihazında Safari", "Windows", "Firefox"]),
    ("ru", ["Chrome на Android", "Safari на iPhone", "Windows", "Firefox"]),
])
def test_names_in_each_language_tell_devices_apart(lang: str, expected: list[str]) -> None:
    gettext = translator(lang).gettext
    devices = [device_of(CHROME_ANDROID), device_of(SAFARI_IPHONE), Device(None, "Windows"), Device("Firefox", None)]
    assert [default_passkey_name(d, [], gettext) for d in devices] == expected
    assert len(set(expected)) == len(expected)


def test_a_name_in_use_gets_the_next_free_number() -> None:
    gettext = translator("en").gettext
    android = device_of(CHROME_ANDROID)
    assert default_passkey_name(android, ["Chrome on Android"], gettext) == "Chrome on Android 2"
    assert default_passkey_name(android, ["chrome  on android", "Chrome on Android 2"], gettext) == \
        "Chrome on Android 3"


@pytest.mark.parametrize(("lang", "first", "third"), [("en", "Passkey 1", "Passkey 3"),
                                                      ("az", "Giriş açarı 1", "Giriş açarı 3"),
                                                      ("ru", "Ключ доступа 1", "Ключ доступа 3")])
def test_an_unknown_device_gets_a_numbered_name(lang: str, first: str, third: str) -> None:
    gettext = translator(lang).gettext
    unknown = device_of("curl/8.5.0")
    assert default_passkey_name(unknown, [], gettext) == first
    assert default_passkey_name(unknown, ["Telefon", "Passkey 2026-12-06"], gettext) == third
    # numbered after the person's passkeys, and never a name already in use
    second = first[:-1] + "2"
    assert default_passkey_name(unknown, [third, "Telefon"], gettext) == first[:-1] + "4"
    assert default_passkey_name(unknown, [second], gettext) == third
