"""Plural forms (api.i18n): each plural message gives the forms its language needs (CLDR plural categories via
Babel), with the same placeholders, and the translator picks the right one for a count: Russian one/few/many,
English one/other, Azerbaijani one form after a numeral."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from babel.numbers import format_decimal

from api.i18n import (
    CATALOGS,
    LANGUAGES,
    PLURAL_CATEGORIES,
    SINGULAR_AFTER_NUMERAL,
    message_id,
    needed_forms,
    plural_category,
    plural_forms,
    translator,
)
from api.rendering import TEMPLATES

ROOT = Path(__file__).resolve().parents[3]
PLURAL_CALL = re.compile(r"""\b(?:_n|ngettext)\(\s*(["'])([^"']+)\1\s*,""")
"""A plural lookup with a literal message id: `_n("x", count)` in a template, `tr.ngettext("x", count)` in code."""
PLAIN_CALL = re.compile(r"""\b(?:_|gettext)\(\s*(["'])([^"']+)\1\s*[,)]""")


def plural_messages(lang: str) -> dict[str, set[str]]:
    """Each plural message of a catalog with the categories it gives."""
    found: dict[str, set[str]] = {}
    for key in CATALOGS[lang]:
        category = plural_category(key)
        if category is not None:
            found.setdefault(message_id(key), set()).add(category)
    return found


def spaced(text: str) -> str:
    """`text` with its no-break spaces as plain ones: the typography (applied to the catalogs) is not tested here."""
    return text.replace("\u00a0", " ")


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_the_languages_plural_categories_are_cldrs() -> None:
    assert plural_forms("ru") == {"one", "few", "many", "other"}
    assert plural_forms("en") == plural_forms("az") == {"one", "other"}
    assert needed_forms("ru") == plural_forms("ru") and needed_forms("en") == {"one", "other"}
    assert needed_forms("az") == {"other"} and "az" in SINGULAR_AFTER_NUMERAL


def test_keys_name_their_plural_form() -> None:
    assert (message_id("sign.documents_heading.few"), plural_category("sign.documents_heading.few")) \
        == ("sign.documents_heading", "few")
    assert (message_id("sign.document.pages"), plural_category("sign.document.pages")) == ("sign.document.pages", None)
    assert message_id("other") == "other"
    assert set(PLURAL_CATEGORIES) == {"zero", "one", "two", "few", "many", "other"}


def test_every_plural_message_has_the_forms_its_language_needs() -> None:
    messages = plural_messages("en")
    assert {"sign.documents_heading", "report.summary.passed"} <= set(messages)
    for lang in LANGUAGES:
        ours = plural_messages(lang)
        assert set(ours) == set(messages), lang
        for message, categories in ours.items():
            assert needed_forms(lang) <= categories <= plural_forms(lang), (lang, message, categories)


def test_every_form_has_the_count_and_the_same_placeholders() -> None:
    for lang in LANGUAGES:
        for key, text in CATALOGS[lang].items():
            if plural_category(key) is not None:
                english = placeholders(CATALOGS["en"][f"{message_id(key)}.other"])
                assert "count" in english and placeholders(text) == english, (lang, key)


def lookups(pattern: re.Pattern[str]) -> set[str]:
    paths = [*TEMPLATES.glob("*.html"), *(ROOT / "api").glob("*.py"), *(ROOT / "api/routes").glob("*.py")]
    return {m.group(2) for path in paths for m in pattern.finditer(path.read_text(encoding="utf-8"))}


def test_plural_messages_are_looked_up_with_a_count_and_only_so() -> None:
    """A plural message through `_`/gettext would be a KeyError on the page; a plain one through `_n` too."""
    plural = set(plural_messages("en"))
    plain = set(CATALOGS["en"]) - {f"{m}.{c}" for m, forms in plural_messages("en").items() for c in forms}
    assert lookups(PLURAL_CALL) >= plural and lookups(PLURAL_CALL) & plain == set()
    assert lookups(PLAIN_CALL) & plural == set()


@pytest.mark.parametrize(("count", "form", "text"), [
    (1, "one", "1 документ на подпись"),
    (2, "few", "2 документа на подпись"),
    (5, "many", "5 документов на подпись"),
    (11, "many", "11 документов на подпись"),
    (21, "one", "21 документ на подпись"),
    (0, "many", "0 документов на подпись"),
    (4, "few", "4 документа на подпись"),
    (12, "many", "12 документов на подпись"),
    (14, "many", "14 документов на подпись"),
    (22, "few", "22 документа на подпись"),
    (25, "many", "25 документов на подпись"),
    (101, "one", "101 документ на подпись"),
    (111, "many", "111 документов на подпись"),
    (1000, "many", "1 000 документов на подпись"),
])
def test_russian_forms(count: int, form: str, text: str) -> None:
    tr = translator("ru")
    assert tr.locale.plural_form(count) == form
    assert spaced(tr.ngettext("sign.documents_heading", count)) == text
    assert tr.ngettext("sign.documents_heading", count) == CATALOGS["ru"][f"sign.documents_heading.{form}"].format(
        count=format_decimal(count, locale="ru"))


def test_numbers_are_written_as_the_language_writes_them() -> None:
    assert translator("ru").ngettext("sign.documents_heading", 1000).startswith("1\u00a0000")  # CLDR group separator
    assert translator("en").ngettext("sign.documents_heading", 1000).startswith("1,000")
    assert translator("az").ngettext("sign.documents_heading", 1000).endswith("1.000 sənəd")


@pytest.mark.parametrize(("count", "passed"), [
    (1, "Проверена 1 подпись, недействительных нет."),
    (3, "Проверены 3 подписи, недействительных нет."),
    (11, "Проверено 11 подписей, недействительных нет."),
    (21, "Проверена 21 подпись, недействительных нет."),
])
def test_russian_forms_of_the_report_summary(count: int, passed: str) -> None:
    assert spaced(translator("ru").ngettext("report.summary.passed", count)) == passed


@pytest.mark.parametrize(("count", "text"), [
    (1, "1 document to sign"), (0, "0 documents to sign"), (2, "2 documents to sign"), (21, "21 documents to sign"),
    (1000, "1,000 documents to sign"),
])
def test_english_forms(count: int, text: str) -> None:
    assert spaced(translator("en").ngettext("sign.documents_heading", count)) == text


@pytest.mark.parametrize("count", [0, 1, 2, 5, 21, 101])
def test_azerbaijani_keeps_the_noun_singular_after_a_numeral(count: int) -> None:
    """The catalog gives the `other` form alone: "İmzalanacaq 1 sənəd", "İmzalanacaq 5 sənəd"."""
    assert spaced(translator("az").ngettext("sign.documents_heading", count)) == f"İmzalanacaq {count} sənəd"


def test_azerbaijani_may_give_a_form_for_one() -> None:
    """Where the sentence, not the noun, differs for a single thing ("hamısı", all of them)."""
    tr = translator("az")
    assert spaced(tr.ngettext("report.summary.passed", 1)) == "1 imza yoxlanıldı və etibarlıdır."
    assert spaced(tr.ngettext("report.summary.passed", 2)) == "2 imza yoxlanıldı, hamısı etibarlıdır."


def test_unknown_plural_messages_are_refused() -> None:
    for lang in LANGUAGES:
        with pytest.raises(KeyError):
            translator(lang).ngettext("no.such.message", 2)
        with pytest.raises(KeyError):
            translator(lang).ngettext("sign.document.pages", 2)  # a plain message has no plural forms
