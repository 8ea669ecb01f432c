"""The translations: three catalogs with the same keys, every key used exists, language negotiation, dates."""

from __future__ import annotations

import ast
import datetime as dt
import re
import string
from pathlib import Path
from typing import get_args

import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateSyntaxError, select_autoescape
from markupsafe import escape

from api import i18n, rendering
from api.i18n import (
    CATALOGS,
    LANGUAGE_NAMES,
    LANGUAGES,
    message_id,
    negotiate,
    plural_category,
    plural_forms,
    translator,
)
from api.rendering import (
    CARD_ERRORS,
    CARD_REFUSALS,
    CARD_STATUS,
    ERROR_CODES,
    ERROR_MESSAGES,
    PASSKEY_ERRORS,
    PASSKEY_STATUS,
    TEMPLATES,
    card_messages,
    card_messages_json,
    error_message_keys,
    passkey_messages,
    passkey_messages_json,
)
from api.report_view import CHANGE_KINDS, FINDING_CODES, TIME_SOURCES
from api.routes.approval import MANDATE_REASONS
from api.routes.approval import STATES as SIGN_STATES
from api.routes.pages import ACCOUNT_NOTICES
from api.routes.validation import REFUSAL_CODES
from idp.core.claims import CLAIM_DESCRIPTIONS
from idp.core.errors import CardLoginError
from idp.core.interfaces import LEVELS, AccessKind
from idp.core.roles import STAFF_ROLES
from signing.core.interfaces import RequestState
from signing.core.report import ChangeClass, Indication, SignatureKind, SubIndication

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE_KEY = re.compile(r"""\b_n?\(\s*(["'])([^"']+)\1\s*[,)]""")
"""A translation call with a literal message id, `_("x")` or the plural `_n("x", count)`; `_("claim." ~ name)` is
covered by dynamic_keys."""
KEY_SHAPE = re.compile(
    r"^(page|home|error|level|login|passkey|card|consent|claim|form_post|logout|enroll|account|help|sign|verify|report|"
    r"officer)"
    r"\.[A-Za-z0-9_.-]+$")
CODE_USING_KEYS = ("api/rendering.py", "api/routes/pages.py", "api/passkey_names.py", "api/routes/approval.py",
                   "api/routes/validation.py", "api/report_view.py", "api/report_pdf.py", "api/routes/officer.py",
                   "api/routes/director.py")


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def message_ids(lang: str) -> set[str]:
    """The messages of a catalog: its keys, a plural message once (not each of its forms, api.i18n)."""
    return {message_id(key) for key in CATALOGS[lang]}


def forms(lang: str, message: str) -> list[str]:
    """The texts of a message in a catalog: the message itself, or each of its plural forms."""
    catalog = CATALOGS[lang]
    return [catalog[message]] if message in catalog else [v for k, v in catalog.items() if message_id(k) == message]


def test_the_three_catalogs_have_the_same_keys_and_no_empty_text() -> None:
    """The same messages in every language; a plural message's forms are those of its language (test_plurals)."""
    assert set(CATALOGS) == set(LANGUAGES) == {"az", "en", "ru"}
    keys = message_ids("en")
    for lang in LANGUAGES:
        assert message_ids(lang) == keys, (lang, message_ids(lang) ^ keys)
        plain = {k for k in CATALOGS[lang] if plural_category(k) is None}
        assert plain == {k for k in CATALOGS["en"] if plural_category(k) is None}, lang
        assert all(plural_category(k) in plural_forms(lang) for k in set(CATALOGS[lang]) - plain), lang
        empty = [k for k, v in CATALOGS[lang].items() if not v.strip()]
        assert not empty, (lang, empty)
        assert all(KEY_SHAPE.match(k) for k in CATALOGS[lang]), [k for k in CATALOGS[lang] if not KEY_SHAPE.match(k)]


def test_placeholders_agree_across_languages() -> None:
    for message in message_ids("en"):
        english = placeholders(forms("en", message)[0])
        for lang in LANGUAGES:
            assert all(placeholders(text) == english for text in forms(lang, message)), (lang, message)


def test_translations_are_not_left_in_english() -> None:
    """A catalog entry equal to the English one is a forgotten translation (only proper names may repeat)."""
    same = {lang: [k for k, v in CATALOGS[lang].items() if v == CATALOGS["en"].get(k)] for lang in ("az", "ru")}
    assert same == {"az": [], "ru": []}


def template_keys() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(TEMPLATES.glob("*.html")):
        found[path.name] = {m.group(2) for m in TEMPLATE_KEY.finditer(path.read_text(encoding="utf-8"))}
    return found


def code_keys() -> set[str]:
    """String constants shaped like message ids in the modules that pick messages (not template names, not
    the prefixes of ids built at run time, not audit event types)."""
    keys: set[str] = set()
    for name in CODE_USING_KEYS:
        tree = ast.parse((ROOT / name).read_text(encoding="utf-8"))
        audit = {id(call.args[0]) for call in ast.walk(tree) if isinstance(call, ast.Call)
                 and isinstance(call.func, ast.Attribute) and call.func.attr == "audit" and call.args}
        keys |= {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                 and isinstance(node.value, str) and KEY_SHAPE.match(node.value) and id(node) not in audit
                 and not node.value.endswith((".html", "."))}
    return keys


def dynamic_keys() -> set[str]:
    """Message ids built at run time: level.<kind>.<level>, claim.<name>, passkey.*, account.done.*, consent.role.*,
    errors, sign.mandate.<reason> (api.routes.approval)."""
    return ({f"level.name.{lv}" for lv in LEVELS} | {f"level.description.{lv}" for lv in (*LEVELS, "any")}
            | {f"claim.{c}" for c in CLAIM_DESCRIPTIONS} | {f"passkey.error.{c}" for c in PASSKEY_ERRORS}
            | {f"passkey.status.{s}" for s in PASSKEY_STATUS} | {f"account.done.{n}" for n in ACCOUNT_NOTICES}
            | {f"card.error.{c}" for c in CARD_ERRORS} | {f"login.card.status.{s}" for s in CARD_STATUS}
            | {f"sign.state.{s}" for s in (*SIGN_STATES, "decided")}
            | {f"sign.mandate.{reason}" for reason in MANDATE_REASONS}
            | {f"account.signatures.state.{s.value}" for s in RequestState}
            | {f"account.access.kind.{k}" for k in get_args(AccessKind)}
            | {f"consent.role.{r}" for r in STAFF_ROLES}
            | report_keys() | error_message_keys())


def report_keys() -> set[str]:
    """The validation report's codes in words (api.report_view) and the /verify page's refusals."""
    return ({f"report.indication.{i.value}" for i in Indication}
            | {f"report.sub_indication.{s.value}" for s in SubIndication}
            | {f"report.finding.{code}" for code in FINDING_CODES} | {f"report.kind.{k.value}" for k in SignatureKind}
            | {f"report.change.{c.value}" for c in ChangeClass} | {f"report.time_source.{t}" for t in TIME_SOURCES}
            | {f"report.change_kind.{k}" for k in CHANGE_KINDS} | {"report.trust.built_in"}
            | {f"report.qc_type.{t}" for t in ("esign", "eseal", "eweb")}
            | {f"verify.error.{code}" for code in (*REFUSAL_CODES, "pdf_refused")})


def test_every_key_used_exists() -> None:
    used = template_keys()
    assert sum(len(v) for v in used.values()) > 100  # the scan finds the translation calls
    missing = {name: keys - message_ids("en") for name, keys in used.items() if keys - message_ids("en")}
    assert not missing
    assert {"error.form_expired", "enroll.error.empty", "account.error.name_invalid"} <= code_keys()
    assert code_keys() - message_ids("en") == set()
    assert dynamic_keys() - message_ids("en") == set()


def test_no_key_is_unused() -> None:
    used = set().union(*template_keys().values()) | code_keys() | dynamic_keys()
    assert message_ids("en") - used == set()


def test_english_claim_words_are_those_of_idp_claims() -> None:
    """idp.core.claims.CLAIM_DESCRIPTIONS stays the English source of the consent page's words."""
    assert {name: CATALOGS["en"][f"claim.{name}"] for name in CLAIM_DESCRIPTIONS} == dict(CLAIM_DESCRIPTIONS)


def test_error_messages_cover_every_code_and_description() -> None:
    assert set(ERROR_MESSAGES.values()) <= set(CATALOGS["en"])
    assert {f"error.code.{c}" for c in ERROR_CODES} <= set(CATALOGS["en"])


def test_passkey_messages_are_complete_in_every_language() -> None:
    for lang in LANGUAGES:
        messages = passkey_messages(translator(lang))
        assert set(messages["errors"]) == set(PASSKEY_ERRORS)
        assert set(messages["status"]) == set(PASSKEY_STATUS)
    assert "registration office" in passkey_messages(translator("en"))["errors"]["code_invalid"]


def test_the_message_blocks_built_once_per_language_are_what_the_tojson_filter_writes() -> None:
    """The pages' JSON blocks of passkey and ID-card messages are built once per language (api.rendering
    _messages_json): the same text as `{{ passkey_messages(tr)|tojson }}`, each language its own."""
    environment = rendering._env
    for lang in LANGUAGES:
        tr = translator(lang)
        for built, messages in ((passkey_messages_json, passkey_messages), (card_messages_json, card_messages)):
            expected = environment.from_string("{{ m|tojson }}").render(m=messages(tr))
            assert str(built(tr)) == expected
            assert built(translator(lang)) is built(tr)  # built once
    assert passkey_messages_json(translator("en")) != passkey_messages_json(translator("az"))


def test_card_messages_are_complete_in_every_language() -> None:
    for lang in LANGUAGES:
        messages = card_messages(translator(lang))
        assert set(messages["errors"]) == set(CARD_ERRORS)
        assert set(messages["status"]) == set(CARD_STATUS)
        assert all(messages["errors"].values()) and all(messages["status"].values())
    english = card_messages(translator("en"))["errors"]
    assert "extension" in english["no_extension"] and "web-eid.eu" in english["no_extension"]
    assert "blocked" in english["pin_blocked"] and "reader" in english["no_card"]


def _card_error_classes(cls: type[CardLoginError]) -> set[type[CardLoginError]]:
    return {cls}.union(*(_card_error_classes(sub) for sub in cls.__subclasses__()))


def test_every_card_refusal_has_a_message() -> None:
    """Each code of idp.core.errors.CardLoginError (the card endpoints' refusals) is a card.error.<code> message,
    of the JavaScript's messages and of the error page's."""
    codes = {cls.code for cls in _card_error_classes(CardLoginError)}
    assert len(codes) >= 17
    assert codes == set(CARD_REFUSALS)
    assert set(CARD_REFUSALS) <= set(CARD_ERRORS)
    assert {f"card.error.{c}" for c in codes} <= error_message_keys() & set(CATALOGS["en"])


def test_language_names_are_written_in_themselves() -> None:
    assert LANGUAGE_NAMES == {"az": "Azərbaycanca", "en": "English", "ru": "Русский"}


# --- negotiation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("cookie", "ui_locales", "accept", "expected"), [
    (None, None, None, "az"),
    (None, None, "en-GB,en;q=0.9", "en"),
    (None, None, "de-DE, ru;q=0.8, en;q=0.5", "ru"),
    (None, None, "ru;q=0.5, en;q=0.9", "en"),
    (None, None, "en;q=0, ru;q=0.1", "ru"),
    (None, None, "en;q=0", "az"),
    (None, None, "*", "az"),
    (None, None, "fr, de", "az"),
    (None, None, "en;q=abc, ru", "ru"),
    (None, None, ";;;,,,=", "az"),
    (None, "ru", "en", "ru"),
    (None, "fr-CA az-Latn-AZ en", "ru", "az"),
    (None, "fr de", "en", "en"),
    ("en", "ru", "az", "en"),
    ("xx", "ru", "en", "ru"),
    ("ru", None, None, "ru"),
])
def test_negotiation_order(cookie: str | None, ui_locales: str | None, accept: str | None, expected: str) -> None:
    assert negotiate(cookie=cookie, ui_locales=ui_locales, accept_language=accept) == expected


def test_long_headers_are_cut() -> None:
    assert negotiate(cookie=None, ui_locales=None, accept_language="xx, " * 1000 + "ru") == "az"


# --- messages and dates -----------------------------------------------------------------------------------

def test_gettext_fills_placeholders_and_refuses_unknown_keys() -> None:
    tr = translator("en")
    assert tr.gettext("account.passkeys.remove", name="My {phone}") == "Remove “My {phone}”"
    with pytest.raises(KeyError):
        tr.gettext("no.such.key")
    assert translator("xx").lang == "az"


@pytest.mark.parametrize(("lang", "date", "moment"), [
    ("az", "4 mart 2025", "5 mar 2025 02:05"),
    ("en", "March 4, 2025", "Mar 5, 2025, 2:05\u202fAM"),
    ("ru", "4 марта 2025\u202fг.", "5 мар. 2025\u202fг., 02:05"),
])
def test_dates_in_each_language_in_azerbaijan_time(lang: str, date: str, moment: str) -> None:
    tr = translator(lang)
    assert tr.date(dt.date(2025, 3, 4)) == date
    at = dt.datetime(2025, 3, 4, 22, 5, tzinfo=dt.UTC)  # 02:05 on the 5th in Baku (UTC+4)
    assert tr.datetime(at) == moment
    assert tr.datetime(at.replace(tzinfo=None)) == moment  # naive values are UTC, as stored
    assert tr.date(at) == tr.date(dt.date(2025, 3, 5))


def test_catalogs_are_refused_when_malformed(tmp_path: Path) -> None:
    for lang in LANGUAGES:
        (tmp_path / f"{lang}.json").write_text('{"a.b": "x"}', encoding="utf-8")
    assert i18n.load_catalogs(tmp_path)["ru"] == {"a.b": "x"}
    (tmp_path / "ru.json").write_text('{"a.b": 1}', encoding="utf-8")
    with pytest.raises(ValueError, match="ru.json"):
        i18n.load_catalogs(tmp_path)
    (tmp_path / "ru.json").write_text('{\n  "a.b": "x",\n  "a.c": "say "hi""\n}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"ru.json is not JSON: .* line 3 column"):
        i18n.load_catalogs(tmp_path)


def literal_error_descriptions() -> set[str]:
    """The literal descriptions of every error page: error_page(code, "...") in the routes, ErrorPage(code, "...")
    in idp/, and module constants passed to them (EXPIRED)."""
    found: set[str] = set()
    core = ROOT / "idp" / "core"
    for path in [*sorted((ROOT / "api/routes").glob("*.py")), core / "authorize.py", core / "logout.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     for t in node.targets if isinstance(t, ast.Name) and isinstance(node.value, ast.Constant)}
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and len(call.args) >= 2):
                continue
            name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
            if name not in ("error_page", "ErrorPage"):
                continue
            arg = call.args[1]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
            elif isinstance(arg, ast.Name) and arg.id in constants:
                found.add(str(constants[arg.id]))
    return found


def test_every_error_page_description_has_plain_words() -> None:
    described = literal_error_descriptions()
    assert "this sign-in request has expired or was already completed; start again from the service you were using" \
        in described and len(described) >= 12
    assert described - set(ERROR_MESSAGES) == set()


# --- fixed texts written in at compile time (api.rendering.Pretranslated) ------------------------------------

def _without_pretranslation() -> Environment:
    """The pages' environment as it was before Pretranslated: every `_("id")` a call to the page's translator."""
    plain = Environment(loader=FileSystemLoader(rendering.TEMPLATES), autoescape=select_autoescape(["html"]),
                        undefined=StrictUndefined)
    plain.globals.update(rendering._PAGE_GLOBALS)
    return plain


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_literal_message_id_is_its_text_once_compiled_and_escaped_as_the_call_was(lang: str) -> None:
    """`_("id")` needs no translator once compiled: the page renders with no `_` at all, and the text is escaped as
    the call's result was (an apostrophe of the English catalog, Russian no-break spaces kept)."""
    environment = rendering._ENVIRONMENTS[lang]
    source = '<p title="{{ _("error.redirect_uri_unregistered") }}">{{ _("login.card.tls.hint") }}</p>'
    written = environment.from_string(source).render()  # no `_` in the context: nothing is called
    tr = translator(lang)
    assert written == _without_pretranslation().from_string(source).render(_=tr.gettext)
    assert str(escape(tr.gettext("login.card.tls.hint"))) in written
    if lang == "en":
        assert "service&#39;s" in written


def test_calls_with_placeholders_variable_ids_and_attributes_stay_calls() -> None:
    """Only `_("literal")` alone is written in: `_("id", n=...)`, `_(key)`, `_n` and an attribute named `_` are
    called while rendering, with the page's translator."""
    environment = rendering._ENVIRONMENTS["en"]
    calls: list[tuple[str, dict[str, object]]] = []

    def spy(key: str, /, **params: object) -> str:
        calls.append((key, params))
        return translator("en").gettext(key, **params) if key in CATALOGS["en"] else key

    template = environment.from_string('{{ _("error.title", x=1) }}|{{ _(key) }}|{{ obj._("error.title") }}')
    written = template.render(_=spy, key="error.code_label", obj={"_": spy})
    assert [key for key, _ in calls] == ["error.title", "error.code_label", "error.title"]
    assert written.split("|")[1] == translator("en").gettext("error.code_label")


def test_an_unknown_literal_message_id_stops_the_compilation() -> None:
    with pytest.raises(TemplateSyntaxError, match="no message 'no.such.message' in the ru catalog"):
        rendering._ENVIRONMENTS["ru"].from_string('<p>{{ _("no.such.message") }}</p>')


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_whole_page_is_the_same_with_its_texts_written_in(lang: str) -> None:
    """error.html through base.html (title, language switcher, footer): byte for byte what the calls wrote."""
    tr = translator(lang)
    page = {"error": "invalid_request", "message_key": "error.redirect_uri_unregistered", "detail": "a <b>detail",
            "lang": lang, "_": tr.gettext, "_n": tr.ngettext, "tr": tr,
            "languages": rendering.language_links(lang, "/error")}
    written = rendering._ENVIRONMENTS[lang].get_template("error.html").render(page)
    assert written == _without_pretranslation().get_template("error.html").render(page)
    assert str(escape(tr.gettext("error.next_step"))) in written and "a &lt;b&gt;detail" in written
