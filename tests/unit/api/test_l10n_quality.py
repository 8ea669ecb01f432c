"""Language quality of the catalogs: the az/ru review's glossary and typography, checked on every key.

The review (December 2026) chose one term per notion; the forms it refused never come back in a new page. The
no-break spaces are applied by api.i18n.typeset as the catalogs are read, so they are checked on the loaded
catalogs and on rendered pages, never on the JSON sources (where they need not be typed)."""

from __future__ import annotations

import html
import json
import re

import httpx
import pytest

from api.i18n import CATALOGS, LOCALES, NBSP, translator, typeset

SOURCES = {lang: json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8")) for lang in ("az", "en", "ru")}

CRYPTO_KEY_AZ = frozenset({
    "report.sub_indication.SIG_CRYPTO_FAILURE", "report.sub_indication.CRYPTO_CONSTRAINTS_FAILURE",
    "report.finding.key_usage", "report.finding.extended_key_usage", "report.qscd",
})
"""Validation report texts where a bare "açar" is a signer's cryptographic key (ETSI EN 319 102-1 vocabulary),
not a passkey: the only bare "açar" the glossary allows."""

FORBIDDEN: dict[str, tuple[tuple[str, str], ...]] = {
    "az": (
        (r"(?<!giriş )(?<!Giriş )(?<![\w])açar", 'bare "açar" for a passkey: "giriş açarı"'),
        (r"\b[Çç]ıxın\b", '"Çıxın" reads "Get out!": "Çıxış edin"'),
        (r"[Qq]eydiyyat (məntəqə|ofis)", 'registration office: "qeydiyyat mərkəzi"'),
        (r"\bAçar(a|da|dan|la|ın|ı)\b", 'the brand with a case ending: "Açar sistemi(nə/ndə/ndən)"'),
        (r"\büz\b(?! tanıma)", 'face: "üz tanıma"'),
        (r"\b[Mm]əsələn(?!,)", '"məsələn," takes a comma'),
        (r"çıxışlar", '"çıxışlar" reads "exits": "məlumatlarınıza çıxış imkanları"'),
        (r"Artıq daxil olmamısınız", "ungrammatical"),
    ),
    "ru": (
        (r"пункт\w* регистрации", 'registration office: "регистрационный центр"'),
        (r"регистрационн\w+ офис", 'registration office: "регистрационный центр"'),
        (r"больше не вошли", "ungrammatical"),
        (r"(пальца|пальцем),? (или )?лиц(о|а|ом)\b", 'face: "распознавание лица"'),
        (r"\bОн (получит|получает|может|сохраняет)", 'a heading or sentence starting with "Он": "Сервис"'),
        (r"неизвестен Açar", 'the brand in a case: "системе Açar"'),
        (r"\bс ним\b", '"войти с ним": "с его помощью"'),
    ),
}
ALLOWED_CIXIS = re.compile(r"çıxış e[dt]|adından çıxış|sistemindən çıxış|məlumat\w* (bütün )?çıxış|çıxış sorğu", re.I)
"""The glossary's uses of "çıxış" in az: signing out (çıxış etmək), acting on someone's behalf (adından çıxış),
a logout request, and access always with its object (məlumatlarınıza çıxış)."""


@pytest.mark.parametrize("lang", ["az", "ru"])
def test_the_glossary_forbidden_forms_never_appear(lang: str) -> None:
    found = []
    for key, text in CATALOGS[lang].items():
        plain = text.replace(NBSP, " ")
        for pattern, why in FORBIDDEN[lang]:
            if lang == "az" and key in CRYPTO_KEY_AZ and "açar" in pattern:
                continue
            if re.search(pattern, plain):
                found.append((key, why, plain))
    assert found == []


def test_the_forbidden_patterns_catch_what_the_review_refused() -> None:
    """The patterns above match the review's "now" column (so the test above can fail), not its fixes."""
    refused = {"az": ["«{name}» açarını silin", "Çıxın", "qeydiyyat məntəqəsinə müraciət edin", "Açardan çıxın",
                      "barmaq izi və ya üz vasitəsilə", "məsələn 5ABCD12", "bütün çıxışlar ləğv olunur"],
               "ru": ["в пункт регистрации", "Вы больше не вошли в систему.", "отпечатком пальца или лицом",
                      "Он получит:", "неизвестен Açar.", "Вы можете войти с ним."]}
    for lang, texts in refused.items():
        for text in texts:
            assert any(re.search(p, text) for p, _ in FORBIDDEN[lang]), (lang, text)
    fixed = {"az": ["«{name}» giriş açarını silin", "Çıxış edin", "qeydiyyat mərkəzinə", "Açar sistemindən çıxış",
                    "üz tanıma ilə", "məsələn, 5ABCD12", "Açar ilə daxil olmaq"],
             "ru": ["в регистрационный центр", "распознаванием лица", "Сервис получит:", "с его помощью"]}
    for lang, texts in fixed.items():
        for text in texts:
            assert not any(re.search(p, text) for p, _ in FORBIDDEN[lang]), (lang, text)


def test_cixis_means_sign_out_or_access_with_its_object() -> None:
    bare = [(key, text) for key, text in CATALOGS["az"].items()
            if re.search(r"çıxış", text, re.I) and not ALLOWED_CIXIS.search(text.replace(NBSP, " "))]
    assert bare == []


def test_the_glossary_terms_are_used() -> None:
    """The chosen terms, where their notion appears: passkey, registration office, sign-out button."""
    az, ru, en = CATALOGS["az"], CATALOGS["ru"], CATALOGS["en"]
    for key, english in en.items():
        if re.search(r"\bpasskey", english, re.I) and key != "account.passkeys.kind":
            assert "açar" in az[key].lower(), key
            assert re.search(r"ключ", ru[key], re.I), key
        if re.search(r"registration office\b", english, re.I):
            assert "qeydiyyat mərkəz" in az[key].lower(), key
            assert "регистрационн" in ru[key].lower() and "центр" in ru[key], key
    assert az["logout.confirm.submit"] == "Çıxış edin" and ru["logout.confirm.submit"] == "Выйти"
    assert (az["consent.allow"], az["consent.deny"]) == ("İcazə verin", "İmtina edin")
    assert (ru["consent.allow"], ru["consent.deny"]) == ("Разрешить", "Отказать")


def test_default_passkey_names_are_in_the_page_language() -> None:
    names = {lang: translator(lang).gettext("passkey.default.numbered", number=2) for lang in ("az", "en", "ru")}
    assert names == {"az": "Giriş açarı 2", "en": "Passkey 2", "ru": "Ключ доступа 2"}


# --- typography --------------------------------------------------------------------------------------------

SPACE_BEFORE_DASH = re.compile(r" [\u2014\u2013]")
RU_ONE_LETTER = re.compile(r"(?<![\w\-])[ВвСсКкОоУуИиАаЯя] ")
RU_NUMBER_WORD = re.compile(r"\d [А-Яа-яЁё]")


def typography_faults(lang: str, text: str) -> list[str]:
    faults = [m.group() for m in SPACE_BEFORE_DASH.finditer(text)]
    if lang == "ru":
        faults += [m.group() for m in RU_ONE_LETTER.finditer(text)]
        faults += [m.group() for m in RU_NUMBER_WORD.finditer(text)]
    return faults


def test_typeset_puts_no_break_spaces_where_the_review_lists_them() -> None:
    assert typeset("ru", "Açar — служба входа в сервисы") == f"Açar{NBSP}— служба входа в{NBSP}сервисы"
    assert typeset("ru", "из 7 латинских букв, не более 100 символов") == (
        f"из 7{NBSP}латинских букв, не более 100{NBSP}символов")
    assert typeset("ru", "С ключом к сервису и с кодом, а также у вас") == (
        f"С{NBSP}ключом к{NBSP}сервису и{NBSP}с{NBSP}кодом, а{NBSP}также у{NBSP}вас")
    assert typeset("ru", "осталось {count} попыток") == f"осталось {{count}}{NBSP}попыток"
    assert typeset("az", "Açar — giriş sistemi, 7 latın hərfi") == f"Açar{NBSP}— giriş sistemi, 7 latın hərfi"
    english = "Açar — the sign-in service, a 7 letter code"
    assert typeset("en", english) == english
    for lang in ("az", "ru"):  # idempotent, and only spaces change
        for text in SOURCES[lang].values():
            once = typeset(lang, text)
            assert typeset(lang, once) == once
            assert once.replace(NBSP, " ") == text.replace(NBSP, " ")


@pytest.mark.parametrize("lang", ["az", "ru"])
def test_the_loaded_catalogs_hold_the_typography(lang: str) -> None:
    faults = {key: typography_faults(lang, text) for key, text in CATALOGS[lang].items()}
    assert {key: f for key, f in faults.items() if f} == {}
    assert CATALOGS[lang]["page.footer"].startswith(f"Açar{NBSP}—")


def visible_text(page: str) -> str:
    """The text of a page's body, scripts and tags left out."""
    body = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", page.split("<body", 1)[-1])
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


@pytest.mark.parametrize("lang", ["az", "ru"])
@pytest.mark.parametrize("path", ["/", "/enroll", "/help", "/verify"])
async def test_rendered_pages_hold_the_typography(http: httpx.AsyncClient, lang: str, path: str) -> None:
    r = await http.get(path, headers={"Accept-Language": lang})
    assert r.status_code == 200 and r.headers["content-language"] == lang
    text = visible_text(r.text)
    assert typography_faults(lang, text) == []
    assert f"Açar{NBSP}—" in text  # the footer
