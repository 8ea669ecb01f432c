"""ID-card login in SQL: Web eID challenges, the card holder's person, and the login's rule (verify, map, audit).

Two ways present the card's authentication certificate (issue 15): mutual TLS (the certificate of the TLS handshake,
or the header of a trusted reverse proxy: api.routes.idcard) and the Web eID authentication token ("web-eid:1",
Web eID system architecture, "Authentication"). Both end in `CardLoginService`, which

1. consumes the Web eID nonce first, in one UPDATE ... RETURNING (single use, unexpired, issued for this very
   pending authorization request), so that a replayed or failed nonce stays used whatever happens next;
2. verifies the token's signature and the certificate (idp.core.webeid, idp.core.certificates: path to the
   ID-card anchors, validity, key usage, policies, revocation);
3. maps the card holder (ETSI EN 319 412-1 section 5.1.3 semantics identifier in the subject serialNumber) to a
   person: PNOAZ-<FIN> by FIN, IDCxx-/PASxx-<number> by the identity document (issuing country as ISO 3166-1
   alpha-3, the persons table's form); an unknown holder is refused unless auto-provisioning is on, which then
   registers the person from the certificate's names (audited person.registered); a registered holder who is
   suspended or deceased (idp.sql.persons.STATUSES) is refused (card_holder_inactive);
4. audits the outcome: "login.card.succeeded" (method, fingerprint, issuer, revocation: "good", or "soft-fail"
   when no revocation source answered and ACAR_IDCARD_REVOCATION_SOFT_FAIL accepted it) or "login.card.refused"
   (method, code). A refusal raises the CardLoginError after its audit event; the error's `persist` makes the unit
   of work commit what the refusal wrote (the consumed nonce, the event) and nothing else was written before it.

Step 2 runs outside any unit of work, between the unit that consumes the nonce (`use_nonce`) and the unit that
records the outcome (`record`): the verifier waits on OCSP responders and CRL distribution points, and the built-in
PKI answers its own certificates' OCSP and CRL requests in process with units of its own (keys.fetchers), which a
unit holding its connection would refuse (storage.direct NestedUnitOfWork) and which must not wait behind a
transaction held open across network requests (SQLite's write lock). `check_webeid` and `check_certificate` return
a `CardCheck`, the verified certificate or the refusal; `record` audits and raises the refusal or maps the person.

Every statement is compiled SQLAlchemy Core on storage.direct's Transaction (as idp.sql.passkeys_store).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from babel import Locale
from babel.core import get_global
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.core.certificates import CardHolder, CertificateVerifier, VerifiedCertificate
from idp.core.errors import (
    CardHolderInactive,
    CardHolderUnknown,
    CardLoginError,
    CertificateIdentifierUnsupported,
    WebEidChallengeInvalid,
)
from idp.core.loa import CARD_LOGIN_METHODS, LoginMethod
from idp.core.webeid import WebEidVerifier, new_nonce, parse_token
from idp.sql.models import Person, WebEidChallenge
from keys.identifiers import InvalidIdentifierFormat, normalize_fin
from storage.audit import DeferredAudit
from storage.direct import Transaction, insert_ignoring, table

MAX_NONCE = 100
"""A nonce longer than this was never issued (idp.core.webeid.new_nonce: 44 characters): not looked up."""
PROVISIONING_ACTOR = "idcard"
"""The actor of the person.registered event of an auto-provisioned card holder."""
DOCUMENT_TYPES = {"IDC": "identity_card", "PAS": "passport"}
"""ETSI EN 319 412-1 section 5.1.3 identity type references -> the persons table's document_type."""
_DOCUMENT_NUMBER = re.compile(r"^[0-9A-Z]{4,20}$")
"""The persons table's document numbers (idp.sql.persons): anything else cannot be registered."""
_MAX_NAME = 200

_ch, _persons = table(WebEidChallenge), table(Person)
INSERT_CHALLENGE = insert(_ch)
CONSUME_CHALLENGE = update(_ch).where(
    _ch.c.nonce_hash == bindparam("nonce_hash"), _ch.c.pending_id == bindparam("pending_id"),
    _ch.c.used_at.is_(None), _ch.c.expires_at > bindparam("now"),
).values(used_at=bindparam("now")).returning(_ch.c.nonce_hash)
"""Single use, unexpired, for the same pending request: one statement, so two racing logins cannot both win."""
PERSON_BY_FIN = select(_persons.c.id, _persons.c.status).where(_persons.c.fin == bindparam("fin"))
PERSON_BY_DOCUMENT = select(_persons.c.id, _persons.c.document_type, _persons.c.status).where(
    _persons.c.document_country == bindparam("country"), _persons.c.document_number == bindparam("number"))
ADD_PERSON_BY_FIN = insert_ignoring(_persons, "fin")
ADD_PERSON_BY_DOCUMENT = insert_ignoring(_persons, "document_country", "document_number")


def nonce_key(nonce: str) -> str:
    """The stored key of a nonce: SHA-256 (hex) of its string."""
    return hashlib.sha256(nonce.encode()).hexdigest()


@cache
def _alpha3() -> Mapping[str, str]:
    """ISO 3166-1 alpha-2 -> alpha-3, from CLDR's territory aliases (Babel's data): each alpha-3 code is an alias of
    its alpha-2 code. Where a country has several (a withdrawn ISO 3166-3 code beside the current one: DDR and DEU
    for DE, BUR and MMR for MM), the current one is that spelling the alpha-2 letters in order (DEU, MMR, COD,
    FRA, TLS, YEM), as every current assignment whose alpha-2 has an alias of its own does. User-assigned codes
    (ISO 3166-1 section 8.1.3: AA, QM-QZ, XA-XZ, ZZ), which name no country, are left out: only codes CLDR names
    a territory for, and that are no user-assigned code, are kept."""
    named = {code for code in Locale("en").territories
             if isinstance(code, str) and len(code) == 2 and not _user_assigned(code)}
    candidates: dict[str, list[str]] = {}
    for alias, targets in get_global("territory_aliases").items():
        if (len(alias) == 3 and alias.isalpha() and alias.isupper() and len(targets) == 1 and len(targets[0]) == 2
                and targets[0] in named):
            candidates.setdefault(targets[0], []).append(alias)
    out = {}
    for alpha2, codes in candidates.items():
        current = [c for c in codes if _spells(c, alpha2)] if len(codes) > 1 else codes
        out[alpha2] = sorted(current or codes)[0]
    return out


def _user_assigned(alpha2: str) -> bool:
    """ISO 3166-1 section 8.1.3: AA, QM to QZ, XA to XZ and ZZ are for users, never a country."""
    return alpha2 in ("AA", "ZZ") or alpha2[0] == "X" or (alpha2[0] == "Q" and alpha2[1] >= "M")


def _spells(alpha3: str, alpha2: str) -> bool:
    rest = iter(alpha3)
    return all(letter in rest for letter in alpha2)


def alpha3(country: str) -> str | None:
    """The ISO 3166-1 alpha-3 code of an alpha-2 code (AZ -> AZE), or None for a code that names no country."""
    return _alpha3().get(country.upper())


@dataclass(frozen=True, slots=True)
class Challenge:
    """A Web eID challenge as the browser gets it."""

    nonce: str
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class CardLogin:
    """A successful ID-card login: whom it names, the login method (level high; amr hwk, mfa, pin, sc)."""

    person_id: str
    method: LoginMethod
    certificate: VerifiedCertificate


@dataclass(frozen=True, slots=True)
class CardCheck:
    """A presented card verified outside any unit of work (module docstring): the verified certificate, or the
    refusal with the presented certificate's fingerprint when there was one; `CardLoginService.record` writes it."""

    method: LoginMethod
    fingerprint: str | None
    verified: VerifiedCertificate | None = None
    error: CardLoginError | None = None


class SqlCardLoginStore:
    """Web eID challenges and the card holders' persons on one unit of work (a storage.direct Transaction)."""

    def __init__(self, tx: Transaction, *, request_id: str | None = None) -> None:
        self.tx = tx
        self._audit = DeferredAudit(tx, request_id=request_id)

    async def issue(self, pending_id: str, now: dt.datetime, lifetime: dt.timedelta) -> str:
        """A new nonce (idp.core.webeid.new_nonce) for the pending request, valid for `lifetime`."""
        nonce = new_nonce()
        await self.tx.execute(INSERT_CHALLENGE, nonce_hash=nonce_key(nonce), pending_id=pending_id, created_at=now,
                              expires_at=now + lifetime, used_at=None)
        return nonce

    async def consume(self, nonce: str, pending_id: str, now: dt.datetime) -> bool:
        """Use the nonce up: True once, when it was issued to `pending_id`, is unexpired and was never used."""
        if not nonce or len(nonce) > MAX_NONCE:
            return False
        return await self.tx.one(CONSUME_CHALLENGE, nonce_hash=nonce_key(nonce), pending_id=pending_id,
                                 now=now) is not None

    async def person_by_fin(self, fin: str) -> str | None:
        row = await self.tx.one(PERSON_BY_FIN, fin=fin)
        if row is None:
            return None
        _refuse_inactive(str(row[1]), f"PNOAZ-{fin}")
        return str(row[0])

    async def person_by_document(self, country: str, number: str) -> tuple[str, str | None] | None:
        """The person holding the document (issuing country alpha-3, number) and its registered type."""
        row = await self.tx.one(PERSON_BY_DOCUMENT, country=country, number=number)
        if row is None:
            return None
        _refuse_inactive(str(row[2]), f"{country} {number}")
        return (str(row[0]), row[1])

    async def add_person(self, *, fin: str | None, country: str | None, number: str | None, document_type: str | None,
                         category: str, given_name: str, family_name: str, now: dt.datetime) -> bool:
        """Register a person (ON CONFLICT DO NOTHING: False when a concurrent login registered them first)."""
        statement = ADD_PERSON_BY_FIN if fin is not None else ADD_PERSON_BY_DOCUMENT
        return await self.tx.execute(
            statement[self.tx.dialect_name], fin=fin, category=category, document_type=document_type,
            document_country=country, document_number=number, given_name=given_name, family_name=family_name,
            birthdate=None, created_at=now) == 1

    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None:
        await self._audit.record(event_type, actor=actor, subject=subject, detail=detail)


class CardLoginService:
    """The ID-card login (module docstring): one per process, on the process's verifiers (api.deps)."""

    def __init__(self, *, certificates: CertificateVerifier, webeid: WebEidVerifier, auto_provision: bool,
                 challenge_lifetime: dt.timedelta, clock: Callable[[], dt.datetime]) -> None:
        self.certificates = certificates
        self.webeid = webeid
        self.auto_provision = auto_provision
        self.challenge_lifetime = challenge_lifetime
        self._clock = clock

    async def challenge(self, store: SqlCardLoginStore, pending_id: str) -> Challenge:
        """A Web eID challenge nonce for the pending request (single use, ACAR_IDCARD_CHALLENGE_SECONDS)."""
        now = self._clock()
        nonce = await store.issue(pending_id, now, self.challenge_lifetime)
        return Challenge(nonce, now + self.challenge_lifetime)

    async def use_nonce(self, store: SqlCardLoginStore, *, pending_id: str, nonce: str | None) -> str:
        """Step 1 of a Web eID login: the nonce issued to `pending_id`, used up before anything of the token is
        looked at; WebEidChallengeInvalid (persist), after its audit event, when it is unknown, used or expired."""
        if nonce is None or not await store.consume(nonce, pending_id, self._clock()):
            raise await self.refuse(store, "webeid", WebEidChallengeInvalid(
                "the Web eID challenge is unknown, used, expired or was issued for another sign-in request"))
        return nonce

    async def check_webeid(self, token: object, *, nonce: str) -> CardCheck:
        """Step 2 of a Web eID login, outside any unit of work: the token (the browser's authToken object) parsed,
        its signature over hash(origin) || hash(nonce) and its certificate verified."""
        method = CARD_LOGIN_METHODS["webeid"]
        fingerprint: str | None = None
        try:
            parsed = parse_token(token)
            fingerprint = hashlib.sha256(parsed.certificate_der).hexdigest()
            return CardCheck(method, fingerprint, verified=await self.webeid.verify(parsed, nonce=nonce))
        except CardLoginError as exc:
            return CardCheck(method, fingerprint, error=exc)

    async def check_certificate(self, certificate: bytes, intermediates: Sequence[bytes] = ()) -> CardCheck:
        """Step 2 of a mutual-TLS login, outside any unit of work: the DER certificate of the handshake (or of a
        trusted proxy's header) verified."""
        method = CARD_LOGIN_METHODS["tls"]
        fingerprint = hashlib.sha256(certificate).hexdigest()
        try:
            return CardCheck(method, fingerprint,
                             verified=await self.certificates.verify(certificate, intermediates=intermediates))
        except CardLoginError as exc:
            return CardCheck(method, fingerprint, error=exc)

    async def record(self, store: SqlCardLoginStore, check: CardCheck) -> CardLogin:
        """Steps 3 and 4, in the unit of work that completes the login: a refusal audited and raised (persist), or
        the card holder mapped to a person and the login audited."""
        try:
            if check.error is not None:
                raise check.error
            assert check.verified is not None  # noqa: S101 - a CardCheck holds one or the other
            person_id = await self._person(store, check.verified)
        except CardLoginError as exc:
            await self._refused(store, check.method, exc, check.fingerprint)
            raise
        return await self._succeeded(store, check.method, person_id, check.verified)

    async def refuse(self, store: SqlCardLoginStore, method: str, exc: CardLoginError) -> CardLoginError:
        """Audit a refusal found before any certificate (no certificate, a header from an untrusted address) and
        return the error for the caller to raise."""
        await self._refused(store, CARD_LOGIN_METHODS[method], exc, None)
        return exc

    async def _refused(self, store: SqlCardLoginStore, method: LoginMethod, exc: CardLoginError,
                       fingerprint: str | None) -> None:
        detail: dict[str, Any] = {"method": method.name, "code": exc.code}
        if fingerprint is not None:
            detail["fingerprint"] = fingerprint
        await store.audit("login.card.refused", actor="anonymous", detail=detail)

    async def _succeeded(self, store: SqlCardLoginStore, method: LoginMethod, person_id: str,
                         verified: VerifiedCertificate) -> CardLogin:
        await store.audit("login.card.succeeded", actor=person_id, subject=verified.fingerprint, detail={
            "method": method.name, "fingerprint": verified.fingerprint, "issuer": verified.issuer[:500],
            "serial_number": format(verified.serial_number, "x"), "revocation": verified.revocation,
            "revocation_source": verified.revocation_source})
        return CardLogin(person_id, method, verified)

    async def _person(self, store: SqlCardLoginStore, verified: VerifiedCertificate) -> str:
        """The person the card names (module docstring, step 3), registered now if auto-provisioning allows it."""
        holder = verified.holder
        if holder.fin is not None:
            fin = _fin(holder)
            found = await store.person_by_fin(fin)
            if found is not None:
                return found
            return await self._provision(store, verified, fin=fin, country=None, number=None, document_type=None,
                                         category="citizen", lookup=lambda: store.person_by_fin(fin))
        document_type = DOCUMENT_TYPES.get(holder.identifier_type)
        if document_type is None:
            raise CertificateIdentifierUnsupported(
                f"the certificate's identifier {holder.identifier[:80]} is neither PNOAZ-<FIN> nor an identity "
                "card (IDC) or passport (PAS) number")
        country, number = alpha3(holder.country), holder.number.upper()
        if country is None or not _DOCUMENT_NUMBER.fullmatch(number):
            raise CertificateIdentifierUnsupported(
                f"the certificate's identifier {holder.identifier[:80]} names no ISO 3166-1 country or a document "
                "number of 4 to 20 Latin letters or digits")
        held = await store.person_by_document(country, number)
        if held is not None:
            person_id, registered_type = held
            if (registered_type == "passport") != (document_type == "passport"):
                raise CardHolderUnknown(f"the document {holder.identifier[:80]} is registered as a "
                                        f"{registered_type or 'document of unknown type'}, not as a {document_type}")
            return person_id

        async def lookup() -> str | None:
            again = await store.person_by_document(country, number)
            return again[0] if again is not None else None

        return await self._provision(store, verified, fin=None, country=country, number=number,
                                     document_type=document_type, category="foreigner", lookup=lookup)

    async def _provision(self, store: SqlCardLoginStore, verified: VerifiedCertificate, *, fin: str | None,
                         country: str | None, number: str | None, document_type: str | None, category: str,
                         lookup: Callable[[], Any]) -> str:
        """Register an unknown card holder from the certificate (ACAR_IDCARD_AUTO_PROVISION), else refuse."""
        holder = verified.holder
        if not self.auto_provision:
            raise CardHolderUnknown(f"no person is registered for {holder.identifier[:80]}")
        given_name, family_name = _name(holder.given_name), _name(holder.surname)
        if given_name is None or family_name is None:
            raise CardHolderUnknown(f"no person is registered for {holder.identifier[:80]}, and the certificate "
                                    "has no givenName and surname to register one from")
        added = await store.add_person(fin=fin, country=country, number=number, document_type=document_type,
                                       category=category, given_name=given_name, family_name=family_name,
                                       now=self._clock())
        person_id = await lookup()
        if person_id is None:  # the insert met another row on a unique key it does not name (cannot happen)
            raise CardHolderUnknown(f"the card holder {holder.identifier[:80]} could not be registered")
        if added:
            await store.audit("person.registered", actor=PROVISIONING_ACTOR, subject=person_id, detail={
                "category": category, "has_fin": fin is not None, "source": "idcard",
                "fingerprint": verified.fingerprint})
        return str(person_id)


def _refuse_inactive(status: str, holder: str) -> None:
    """CardHolderInactive when the card holder's registry status (idp.sql.persons.STATUSES) is not active: a
    suspended or deceased person cannot log in, even with a valid card."""
    if status != "active":
        raise CardHolderInactive(f"the card holder {holder[:80]} is {status} in the registry: no login")


def _fin(holder: CardHolder) -> str:
    try:
        return normalize_fin(holder.fin)
    except InvalidIdentifierFormat:
        raise CertificateIdentifierUnsupported(f"the certificate's identifier {holder.identifier[:80]} is no "
                                               "well-formed FIN") from None


def _name(value: str | None) -> str | None:
    """A name from the certificate as the persons table holds names (idp.sql.persons), or None."""
    name = (value or "").strip()
    if not name or len(name) > _MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return None
    return name


async def purge_card_rows(session: AsyncSession, now: dt.datetime) -> dict[str, int]:
    """Forget expired Web eID challenges (used or not: an expired nonce is refused either way)."""
    result = await session.execute(delete(WebEidChallenge).where(WebEidChallenge.expires_at <= now))
    return {"webeid_challenges": int(result.rowcount or 0)}  # type: ignore[attr-defined]
