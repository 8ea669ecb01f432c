"""Languages of the citizen-facing pages: Azerbaijani (the default), English and Russian.

One JSON catalog per language in api/locales/ (message id -> text, the ids English-like dotted keys), the
same keys in every catalog (a test holds them equal). Placeholders are `{name}` (str.format_map); their
values are never parsed again, and Jinja escapes the result.

The page language is negotiated in this order: the citizen's own choice on the language switcher (cookie
`acar_lang`), the authorization request's `ui_locales` (OIDC Core 3.1.2.1: space-separated BCP 47 tags in
order of preference), the browser's Accept-Language (RFC 9110 section 12.5.4), else Azerbaijani.
Dates are written in the language's own format (CLDR via Babel), in Azerbaijan time.

Typography is applied here, once, as the catalogs are read (`typeset`), never typed by hand in templates: a
no-break space (U+00A0) before a dash in Azerbaijani and Russian, and in Russian after a one-letter word (в, с, к,
о, у, и, а, я) and between a number and the word it counts, so that a line never starts with a dash or ends with
a lone preposition (the az/ru language review of December 2026).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from babel.core import Locale
from babel.dates import format_date, format_time, get_datetime_format

LANGUAGES: tuple[str, ...] = ("az", "en", "ru")
DEFAULT_LANGUAGE = "az"
LANGUAGE_NAMES: Mapping[str, str] = {"az": "Azərbaycanca", "en": "English", "ru": "Русский"}
"""Each language named in itself, as the switcher shows it."""
LANGUAGE_COOKIE = "acar_lang"
LANGUAGE_COOKIE_MAX_AGE = 365 * 86400
LOCALES = Path(__file__).with_name("locales")
DISPLAY_TIMEZONE = dt.timezone(dt.timedelta(hours=4), "AZT")
"""Azerbaijan time: UTC+4, without daylight saving time since 2016."""
_MAX_HEADER = 1000
"""Longer Accept-Language or ui_locales values are cut here: no language list needs more."""


NBSP = "\u00a0"
_BEFORE_DASH = re.compile(r"[ \u00a0]+(?=[\u2014\u2013])")
"""The spaces before an em or en dash: a dash never starts a line."""
_RU_SHORT_WORD = re.compile(r"(?<![\w\-])([ВвСсКкОоУуИиАаЯя]) +(?=\S)")
"""A one-letter Russian word (preposition, conjunction, pronoun) and the spaces after it."""
_RU_NUMBER = re.compile(r"(?<=\d) +(?=[А-Яа-яЁё])|(\{(?:count|n|number|total|size|pages)\}) +(?=[А-Яа-яЁё])")
"""The spaces between a number (or a counting placeholder) and the Russian word after it."""
TYPESET_LANGUAGES = ("az", "ru")


def typeset(lang: str, text: str) -> str:
    """`text` with the no-break spaces its language asks for (the module docstring); idempotent, and English and
    text without those patterns come back unchanged."""
    if lang not in TYPESET_LANGUAGES:
        return text
    text = _BEFORE_DASH.sub(NBSP, text)
    if lang == "ru":
        text = _RU_SHORT_WORD.sub(lambda m: m.group(1) + NBSP, text)
        text = _RU_NUMBER.sub(lambda m: (m.group(1) or "") + NBSP, text)
    return text


def load_catalogs(directory: Path = LOCALES) -> dict[str, dict[str, str]]:
    """Every language's catalog, read once and typeset; a missing file or a non-string entry stops the start."""
    catalogs: dict[str, dict[str, str]] = {}
    for lang in LANGUAGES:
        data = json.loads((directory / f"{lang}.json").read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ValueError(f"{directory / lang}.json must be a JSON object of strings")
        catalogs[lang] = {key: typeset(lang, value) for key, value in data.items()}
    return catalogs


CATALOGS: Mapping[str, Mapping[str, str]] = load_catalogs()


def supported(tag: str) -> str | None:
    """The supported language a BCP 47 tag asks for, by its primary subtag (az-Latn-AZ -> az), or None."""
    primary = tag.strip().split("-")[0].split("_")[0].lower()
    return primary if primary in LANGUAGES else None


def from_ui_locales(value: str | None) -> str | None:
    """The first supported language of an OIDC ui_locales value (space-separated, by preference)."""
    for tag in (value or "")[:_MAX_HEADER].split():
        lang = supported(tag)
        if lang is not None:
            return lang
    return None


def from_accept_language(header: str | None) -> str | None:
    """The supported language the browser prefers most (RFC 9110 section 12.5.4: weights, q=0 means "not
    acceptable"; equal weights keep their order). The wildcard names no language and is skipped."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((header or "")[:_MAX_HEADER].split(",")):
        tag, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        lang = supported(tag) if tag and tag != "*" else None
        if lang is not None and 0 < weight <= 1:
            ranked.append((-weight, position, lang))
    return min(ranked)[2] if ranked else None


def negotiate(*, cookie: str | None, ui_locales: str | None, accept_language: str | None) -> str:
    """The page language: the switcher's cookie, then ui_locales, then Accept-Language, else Azerbaijani."""
    if cookie in LANGUAGES:
        return str(cookie)
    return from_ui_locales(ui_locales) or from_accept_language(accept_language) or DEFAULT_LANGUAGE


@dataclass(frozen=True, slots=True)
class Translator:
    """The messages and date formats of one language."""

    lang: str

    @property
    def catalog(self) -> Mapping[str, str]:
        return CATALOGS[self.lang]

    def gettext(self, key: str, /, **params: object) -> str:
        """The message `key` with its `{placeholders}` filled; an unknown key raises KeyError (a test scans
        templates and code for every key used, so this never reaches a citizen)."""
        text = self.catalog[key]
        return text.format_map(params) if params else text

    @property
    def locale(self) -> Locale:
        return Locale.parse(self.lang)

    def date(self, value: dt.date | dt.datetime) -> str:
        """A date as the language writes it (CLDR long format: 4 mart 2025, March 4, 2025, 4 марта 2025 г.)."""
        if isinstance(value, dt.datetime):
            value = _local(value).date()
        return format_date(value, "long", locale=self.locale)

    def datetime(self, value: dt.datetime) -> str:
        """A moment as the language writes it (CLDR medium date and short time), in Azerbaijan time."""
        local = _local(value)
        pattern = str(get_datetime_format("medium", locale=self.locale))
        return (pattern.replace("'", "")
                .replace("{0}", format_time(local, "short", locale=self.locale))
                .replace("{1}", format_date(local.date(), "medium", locale=self.locale)))


def _local(value: dt.datetime) -> dt.datetime:
    """Azerbaijan time of an aware moment; a naive one is UTC, as the database stores it."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(DISPLAY_TIMEZONE)


def translator(lang: str) -> Translator:
    return Translator(lang if lang in LANGUAGES else DEFAULT_LANGUAGE)
