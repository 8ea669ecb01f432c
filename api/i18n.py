"""Languages of the citizen-facing pages: Azerbaijani (the default), English and Russian.

One JSON catalog per language in api/locales/ (message id -> text, the ids English-like dotted keys), the
same message ids in every catalog (a test holds them equal). Placeholders are `{name}` (str.format_map); their
values are never parsed again, and Jinja escapes the result.

A message with a count has one entry per plural form of the language, the message id followed by a CLDR plural
category (Unicode TR 35, Part 3 "Numbers", section 5.1 "Language Plural Rules"): `sign.documents_heading.one`,
`.few`, `.many`, `.other`. Every string stays a plain string of the flat catalog. `Translator.ngettext` picks
the form Babel's CLDR rules give for the count: Russian one (1, 21, 101), few (2-4, 22), many (0, 5-20, 25,
111), other (fractions); English one (1) and other. Azerbaijani puts the noun in the singular after a numeral
("3 giriş açarı"), so its catalog may give the `other` form alone (SINGULAR_AFTER_NUMERAL), and the `one` form
too where a sentence still differs for a single thing.

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
from babel.numbers import format_decimal

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
PLURAL_CATEGORIES: tuple[str, ...] = ("zero", "one", "two", "few", "many", "other")
"""The CLDR plural categories (Unicode TR 35, Part 3, section 5.1): a catalog key ending in one of them, after a
dot, is a form of a plural message; no other key may end so."""
SINGULAR_AFTER_NUMERAL = frozenset({"az"})
"""Languages whose nouns stay singular after a numeral: a plural message may give its `other` form alone."""


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
    """Every language's catalog, read once and typeset; a missing file, text that is not JSON (named with its file,
    line and column, for a translator) or a non-string entry stops the start."""
    catalogs: dict[str, dict[str, str]] = {}
    for lang in LANGUAGES:
        path = directory / f"{lang}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not JSON: {error}") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ValueError(f"{directory / lang}.json must be a JSON object of strings")
        catalogs[lang] = {key: typeset(lang, value) for key, value in data.items()}
    return catalogs


CATALOGS: Mapping[str, Mapping[str, str]] = load_catalogs()


def message_id(key: str) -> str:
    """The message a catalog key belongs to: the key itself, or without its plural category (x.few -> x)."""
    head, _, last = key.rpartition(".")
    return head if head and last in PLURAL_CATEGORIES else key


def plural_category(key: str) -> str | None:
    """The CLDR plural category a catalog key is the form for (x.few -> few), or None for a plain message."""
    return key.rpartition(".")[2] if message_id(key) != key else None


def plural_forms(lang: str) -> frozenset[str]:
    """The plural categories CLDR defines for a language's cardinal numbers (ru: one, few, many, other)."""
    return frozenset(Locale.parse(lang).plural_form.tags) | {"other"}


def needed_forms(lang: str) -> frozenset[str]:
    """The forms every plural message of `lang` must give: all of CLDR's, or `other` alone where the noun stays
    singular after a numeral (SINGULAR_AFTER_NUMERAL)."""
    return frozenset({"other"}) if lang in SINGULAR_AFTER_NUMERAL else plural_forms(lang)


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

    def ngettext(self, key: str, count: int, /, **params: object) -> str:
        """The plural message `key` in the form the language uses for `count` (CLDR plural rules via Babel),
        `{count}` written as the language writes numbers (ru 1 000 with a no-break space, en 1,000, az 1.000), the other
        `{placeholders}` filled; a form the catalog leaves out is its `other` form (Azerbaijani, see
        SINGULAR_AFTER_NUMERAL). An unknown message raises KeyError, as gettext does."""
        catalog = self.catalog
        text = catalog.get(f"{key}.{self.locale.plural_form(count)}") or catalog[f"{key}.other"]
        return text.format_map({**params, "count": format_decimal(count, locale=self.locale)})

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
