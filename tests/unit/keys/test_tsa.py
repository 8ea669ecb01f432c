"""The RFC 3161 time-stamp authority, checked by `openssl ts` (an independent implementation) and asn1crypto.

Requests come from `openssl ts -query` or are built with asn1crypto for the cases openssl refuses to make;
replies are read with `openssl ts -reply -text` and verified with `openssl ts -verify` against a test PKI.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import itertools
import random
import re
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import algos, core, tsp
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import select

from api.deps import Services
from keys.errors import BackendError, CANotInitialized, TsaNotConfigured
from keys.interfaces import HashName, KeyType
from keys.software import SoftwareKeyHandle, generate_private_key
from keys.tsa import TimestampAuthority, TimestampReply, TimestampService, TsaProvider
from storage.audit import AuditEvent
from tests.clock import Clock
from tests.tsa_pki import (
    ISSUER,
    POLICY,
    CertificateRecords,
    TsaTestPki,
    build_test_pki,
    openssl,
    openssl_query,
    parse_reply,
    tst_info,
)
from tests.unit.keys.conftest import Backend

DOCUMENT = b"%PDF-1.7 an Acar test document\n" * 100


class CountingSerials:
    """A serial source for tests that need no database (keys.serials is tested on the database below)."""

    def __init__(self, start: int = 7_000_000) -> None:
        self._counter = itertools.count(start)

    async def allocate(self) -> int:
        return next(self._counter)


class FailingSerials:
    async def allocate(self) -> int:
        raise BackendError("database unreachable")


def _handle(key_type: KeyType = "EC-P256") -> SoftwareKeyHandle:
    return SoftwareKeyHandle(f"tsa-{key_type}", generate_private_key(key_type))


@pytest.fixture(scope="module")
def pki() -> TsaTestPki:
    return build_test_pki(_handle())


@pytest.fixture
def authority(pki: TsaTestPki) -> TimestampAuthority:
    return TimestampAuthority(pki.handle, pki.certificate, pki.chain, policy_oid=POLICY, serials=CountingSerials())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "document.pdf"
    path.write_bytes(DOCUMENT)
    return path


def _save(tmp_path: Path, reply: TimestampReply, name: str = "resp.tsr") -> Path:
    path = tmp_path / name
    path.write_bytes(reply.der)
    return path


def _reply_text(path: Path) -> str:
    return openssl("ts", "-reply", "-in", path, "-text").stdout


def _verify(tmp_path: Path, pki: TsaTestPki, data: Path, response: Path, *, untrusted: bool, check: bool = True,
            ) -> str:
    files = pki.write(tmp_path)
    extra = ["-untrusted", str(files.untrusted)] if untrusted else []
    proc = openssl("ts", "-verify", "-data", data, "-in", response, "-CAfile", files.root, *extra, check=check)
    return proc.stdout + proc.stderr


def _request(hash_name: str, hashed: bytes, *, parameters: core.Asn1Value | None = None, **fields: object) -> bytes:
    algorithm = {"algorithm": hash_name, "parameters": parameters}  # None: absent
    values: dict[str, object] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": algos.DigestAlgorithm(algorithm), "hashed_message": hashed},
        **fields,
    }
    der: bytes = tsp.TimeStampReq(values).dump()
    return der


# --- granted ------------------------------------------------------------------------------------------------


async def test_granted_with_nonce_and_certificates_verifies_with_openssl(
    authority: TimestampAuthority, pki: TsaTestPki, data: Path, tmp_path: Path
) -> None:
    query = openssl_query(tmp_path, data, "-sha256", "-cert")
    nonce = re.search(r"Nonce: (0x[0-9A-F]+)", openssl("ts", "-query", "-in", tmp_path / "req.tsq", "-text").stdout)
    assert nonce is not None

    reply = await authority.respond(query)

    assert reply.granted and reply.serial == 7_000_000 and reply.hash_algorithm == "sha256"
    text = _reply_text(_save(tmp_path, reply))
    assert "Status: Granted." in text
    assert f"Policy OID: {POLICY}" in text
    assert f"Nonce: {nonce.group(1)}" in text
    assert "Serial number: 0x6ACFC0" in text  # 7,000,000
    assert "Accuracy: 0x01 seconds" in text
    assert "TSA: DirName:" in text and "CN=Test Time-Stamping Authority" in text
    # certReq: the token carries the TSA certificate and its issuing CA, so only the root is needed
    assert "Verification: OK" in _verify(tmp_path, pki, data, tmp_path / "resp.tsr", untrusted=False)


async def test_without_nonce_or_cert_req_the_token_has_no_certificates(
    authority: TimestampAuthority, pki: TsaTestPki, data: Path, tmp_path: Path
) -> None:
    reply = await authority.respond(openssl_query(tmp_path, data, "-sha256", "-no_nonce"))

    response = _save(tmp_path, reply)
    assert "Nonce: unspecified" in _reply_text(response)
    signed_data = parse_reply(reply.der)["time_stamp_token"]["content"]
    assert not signed_data["certificates"]  # RFC 3161: absent when certReq is false
    assert "Verification: OK" in _verify(tmp_path, pki, data, response, untrusted=True)
    assert "Verification: OK" not in _verify(tmp_path, pki, data, response, untrusted=False, check=False)


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
async def test_every_supported_imprint_algorithm_verifies(
    authority: TimestampAuthority, pki: TsaTestPki, data: Path, tmp_path: Path, hash_name: str
) -> None:
    reply = await authority.respond(openssl_query(tmp_path, data, f"-{hash_name}", "-cert"))

    assert reply.granted and reply.hash_algorithm == hash_name
    assert f"Hash Algorithm: {hash_name}" in _reply_text(_save(tmp_path, reply))
    assert "Verification: OK" in _verify(tmp_path, pki, data, tmp_path / "resp.tsr", untrusted=False)


@pytest.mark.parametrize("key_type", ["EC-P256", "EC-P384", "RSA-2048"])
async def test_every_supported_tsa_key_type_verifies(data: Path, tmp_path: Path, key_type: KeyType) -> None:
    pki = build_test_pki(_handle(key_type))
    tsa = TimestampAuthority(pki.handle, pki.certificate, pki.chain, policy_oid=POLICY, serials=CountingSerials())

    reply = await tsa.respond(openssl_query(tmp_path, data, "-sha256"))

    assert reply.granted
    assert "Verification: OK" in _verify(tmp_path, pki, data, _save(tmp_path, reply), untrusted=True)


async def test_tampered_data_fails_verification(
    authority: TimestampAuthority, pki: TsaTestPki, data: Path, tmp_path: Path
) -> None:
    reply = await authority.respond(openssl_query(tmp_path, data, "-sha256", "-cert"))
    response = _save(tmp_path, reply)
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(DOCUMENT.replace(b"test", b"tEst", 1))

    out = _verify(tmp_path, pki, tampered, response, untrusted=False, check=False)

    assert "Verification: OK" not in out and "message imprint mismatch" in out


async def test_a_token_from_another_tsa_key_fails_verification(pki: TsaTestPki, data: Path, tmp_path: Path) -> None:
    impostor = build_test_pki(_handle())  # same names, another key and chain
    tsa = TimestampAuthority(impostor.handle, impostor.certificate, impostor.chain, policy_oid=POLICY,
                             serials=CountingSerials())
    reply = await tsa.respond(openssl_query(tmp_path, data, "-sha256", "-cert"))

    out = _verify(tmp_path, pki, data, _save(tmp_path, reply), untrusted=False, check=False)

    assert "Verification: OK" not in out


async def test_requested_policy_equal_to_ours_is_granted(
    authority: TimestampAuthority, pki: TsaTestPki, data: Path, tmp_path: Path
) -> None:
    reply = await authority.respond(openssl_query(tmp_path, data, "-sha256", "-cert", "-tspolicy", POLICY))

    assert reply.granted
    assert "Verification: OK" in _verify(tmp_path, pki, data, _save(tmp_path, reply), untrusted=False)


async def test_token_structure_is_der_and_follows_rfc_3161_5816_5652(
    authority: TimestampAuthority, pki: TsaTestPki, data: Path, tmp_path: Path
) -> None:
    reply = await authority.respond(openssl_query(tmp_path, data, "-sha384", "-cert"))

    parsed = parse_reply(reply.der)
    assert parsed.dump(force=True) == reply.der  # asn1crypto re-encodes it to the same bytes: DER
    token = parsed["time_stamp_token"]
    assert token["content_type"].native == "signed_data"
    signed_data = token["content"]
    assert signed_data["version"].native == "v3"
    assert signed_data["encap_content_info"]["content_type"].native == "tst_info"
    assert [c.chosen.dump() for c in signed_data["certificates"]] == sorted(
        [pki.certificate.dump(), pki.chain[0].dump()])
    info = tst_info(parsed)
    assert info["version"].native == "v1"
    assert info["policy"].dotted == POLICY
    assert info["message_imprint"]["hashed_message"].native == hashlib.sha384(DOCUMENT).digest()
    assert info["gen_time"].native == reply.gen_time
    assert info["accuracy"].native == {"seconds": 1, "millis": None, "micros": None}
    assert info["tsa"].chosen == pki.certificate.subject
    (signer,) = signed_data["signer_infos"]
    assert signer["sid"].chosen["serial_number"].native == pki.tsa.serial_number
    assert signer["signature_algorithm"]["algorithm"].native == "sha256_ecdsa"
    attributes = {a["type"].native: a["values"] for a in signer["signed_attrs"]}
    assert set(attributes) == {"content_type", "message_digest", "signing_certificate_v2"}
    assert attributes["content_type"][0].native == "tst_info"
    tst_der = signed_data["encap_content_info"]["content"].contents
    assert attributes["message_digest"][0].native == hashlib.sha256(tst_der).digest()
    (ess,) = attributes["signing_certificate_v2"][0]["certs"]
    assert ess["hash_algorithm"]["algorithm"].native == "sha256"  # the DEFAULT, omitted on the wire
    assert ess["cert_hash"].native == hashlib.sha256(pki.certificate.dump()).digest()
    assert ess["issuer_serial"]["serial_number"].native == pki.tsa.serial_number


async def test_gen_time_keeps_the_fraction_of_a_second(pki: TsaTestPki, data: Path, tmp_path: Path) -> None:
    clock = Clock(dt.datetime.now(dt.UTC).replace(microsecond=120_000))
    tsa = TimestampAuthority(pki.handle, pki.certificate, pki.chain, policy_oid=POLICY, serials=CountingSerials(),
                             clock=clock)

    reply = await tsa.respond(openssl_query(tmp_path, data, "-sha256"))

    gen_time = tst_info(parse_reply(reply.der))["gen_time"]
    assert gen_time.contents.endswith(b".12Z")  # trailing zeros dropped, as RFC 3161 requires
    assert gen_time.native == clock.now


@pytest.mark.parametrize(("accuracy", "expected"), [
    (dt.timedelta(seconds=1, milliseconds=500), {"seconds": 1, "millis": 500, "micros": None}),
    (dt.timedelta(microseconds=250), {"seconds": None, "millis": None, "micros": 250}),
    (dt.timedelta(milliseconds=20, microseconds=5), {"seconds": None, "millis": 20, "micros": 5}),
])
async def test_accuracy_is_encoded_in_seconds_millis_micros(
    pki: TsaTestPki, data: Path, tmp_path: Path, accuracy: dt.timedelta, expected: dict[str, int | None]
) -> None:
    tsa = TimestampAuthority(pki.handle, pki.certificate, pki.chain, policy_oid=POLICY, serials=CountingSerials(),
                             accuracy=accuracy)

    reply = await tsa.respond(openssl_query(tmp_path, data, "-sha256"))

    assert tst_info(parse_reply(reply.der))["accuracy"].native == expected


async def test_large_nonce_is_echoed(authority: TimestampAuthority) -> None:
    nonce = 2**200 + 12345
    reply = await authority.respond(_request("sha256", bytes(32), nonce=nonce))

    assert tst_info(parse_reply(reply.der))["nonce"].native == nonce


async def test_imprint_with_null_parameters_is_copied_as_sent(authority: TimestampAuthority) -> None:
    with_null = await authority.respond(_request("sha256", bytes(32), parameters=core.Null()))
    without = await authority.respond(_request("sha256", bytes(32)))

    assert tst_info(parse_reply(with_null.der))["message_imprint"]["hash_algorithm"]["parameters"].native is None
    assert b"\x05\x00" in tst_info(parse_reply(with_null.der))["message_imprint"].dump()
    assert b"\x05\x00" not in tst_info(parse_reply(without.der))["message_imprint"].dump()


# --- rejected -----------------------------------------------------------------------------------------------


def _status(reply: TimestampReply) -> dict[str, object]:
    status: dict[str, object] = parse_reply(reply.der)["status"].native
    return status


@pytest.mark.parametrize("body", [
    b"", b"\x00", b"not DER at all", b"\x30\x80\x00\x00", b"\x30\x03\x02\x01\x01", b"\x30" + b"\xff" * 9,
])
async def test_malformed_request_is_rejected_bad_data_format(
    authority: TimestampAuthority, tmp_path: Path, body: bytes
) -> None:
    reply = await authority.respond(body)

    assert not reply.granted and reply.failure == "bad_data_format"
    assert _status(reply) == {"status": "rejection", "status_string": ["the request is not a DER TimeStampReq"],
                              "fail_info": {"bad_request", "bad_data_format"}}
    text = _reply_text(_save(tmp_path, reply))
    assert "Status: Rejected." in text and "the data submitted has the wrong format" in text
    assert "TST info:\nNot included." in text


async def test_truncated_or_padded_openssl_request_is_bad_data_format(
    authority: TimestampAuthority, data: Path, tmp_path: Path
) -> None:
    query = openssl_query(tmp_path, data, "-sha256")
    for body in (query[:-1], query + b"\x00", query[:10]):
        assert (await authority.respond(body)).failure == "bad_data_format"


async def test_request_version_2_is_bad_data_format(authority: TimestampAuthority) -> None:
    reply = await authority.respond(_request("sha256", bytes(32), version=2))

    assert reply.failure == "bad_data_format"


async def test_sha1_imprint_is_rejected_bad_alg(authority: TimestampAuthority, data: Path, tmp_path: Path) -> None:
    reply = await authority.respond(openssl_query(tmp_path, data, "-sha1"))

    assert reply.failure == "bad_alg"
    assert "unrecognized or unsupported algorithm identifier" in _reply_text(_save(tmp_path, reply))


@pytest.mark.parametrize(("hash_name", "length"), [("sha256", 20), ("sha256", 33), ("sha384", 32), ("sha512", 0)])
async def test_imprint_of_the_wrong_length_is_rejected_bad_alg(
    authority: TimestampAuthority, hash_name: str, length: int
) -> None:
    reply = await authority.respond(_request(hash_name, bytes(length)))

    assert reply.failure == "bad_alg" and "bytes long" in str(_status(reply)["status_string"])


@pytest.mark.parametrize("hash_name", ["md5", "sha224", "sha3_256", "1.2.3.4.5"])
async def test_unsupported_imprint_algorithm_is_rejected_bad_alg(authority: TimestampAuthority, hash_name: str) -> None:
    reply = await authority.respond(_request(hash_name, bytes(32)))

    assert reply.failure == "bad_alg"


async def test_sha2_with_parameters_other_than_null_is_bad_data_format(authority: TimestampAuthority) -> None:
    """RFC 5754 section 2: SHA-2 parameters are absent or NULL; anything else is malformed."""

    def tlv(tag: int, content: bytes) -> bytes:
        return bytes((tag, len(content))) + content

    algorithm = tlv(0x30, core.ObjectIdentifier("2.16.840.1.101.3.4.2.1").dump() + core.Integer(1).dump())
    request = tlv(0x30, core.Integer(1).dump() + tlv(0x30, algorithm + tlv(0x04, bytes(32))))

    reply = await authority.respond(request)

    assert reply.failure == "bad_data_format"


async def test_other_policy_is_rejected_unaccepted_policy(
    authority: TimestampAuthority, data: Path, tmp_path: Path
) -> None:
    reply = await authority.respond(openssl_query(tmp_path, data, "-sha256", "-tspolicy", "1.2.3.4"))

    assert reply.failure == "unaccepted_policy"
    assert "the requested TSA policy is not supported by the TSA" in _reply_text(_save(tmp_path, reply))


async def test_request_extensions_are_rejected_unaccepted_extension(authority: TimestampAuthority) -> None:
    extension = {"extn_id": "1.2.3.4", "critical": False, "extn_value": b"\x05\x00"}
    reply = await authority.respond(_request("sha256", bytes(32), extensions=[extension]))

    assert reply.failure == "unaccepted_extensions"


async def test_random_corruptions_never_raise(authority: TimestampAuthority, data: Path, tmp_path: Path) -> None:
    query = openssl_query(tmp_path, data, "-sha256", "-cert")
    rng = random.Random(3161)  # noqa: S311 - reproducible fuzzing, not cryptography
    outcomes = set()
    for _ in range(1500):
        body = bytearray(query)
        for _ in range(rng.randint(1, 4)):
            action = rng.randrange(3)
            position = rng.randrange(len(body)) if body else 0
            if action == 0 and body:
                body[position] = rng.randrange(256)
            elif action == 1:
                body.insert(position, rng.randrange(256))
            elif body:
                del body[position:position + rng.randint(1, 8)]
        reply = await authority.respond(bytes(body))
        parse_reply(reply.der)
        outcomes.add(reply.failure)
    assert "bad_data_format" in outcomes and outcomes <= {
        None, "bad_data_format", "bad_alg", "unaccepted_policy", "unaccepted_extensions"}


# --- server-side failures -----------------------------------------------------------------------------------


async def test_no_serial_number_is_a_system_failure(pki: TsaTestPki) -> None:
    tsa = TimestampAuthority(pki.handle, pki.certificate, pki.chain, policy_oid=POLICY, serials=FailingSerials())

    reply = await tsa.respond(_request("sha256", bytes(32)))

    assert reply.failure == "system_failure" and "database unreachable" in (reply.detail or "")
    assert _status(reply)["status_string"] == ["system failure"]  # the cause stays in the server's log


async def test_signing_failure_is_a_system_failure(pki: TsaTestPki) -> None:
    class BrokenToken(SoftwareKeyHandle):
        async def sign(self, data: bytes, hash_name: HashName = "sha256") -> bytes:
            raise BackendError("PKCS#11 token removed")

    key = generate_private_key("EC-P256")
    broken = BrokenToken("broken", key)
    broken_pki = build_test_pki(broken)
    tsa = TimestampAuthority(broken, broken_pki.certificate, broken_pki.chain, policy_oid=POLICY,
                             serials=CountingSerials())

    reply = await tsa.respond(_request("sha256", bytes(32)))

    assert reply.failure == "system_failure" and "token removed" in (reply.detail or "")


async def test_expired_tsa_certificate_is_a_system_failure(pki: TsaTestPki) -> None:
    clock = Clock(dt.datetime.now(dt.UTC) + dt.timedelta(days=11))
    tsa = TimestampAuthority(pki.handle, pki.certificate, pki.chain, policy_oid=POLICY, serials=CountingSerials(),
                             clock=clock)

    reply = await tsa.respond(_request("sha256", bytes(32)))

    assert reply.failure == "system_failure" and "not valid" in (reply.detail or "")


# --- construction refuses what cannot make valid tokens ----------------------------------------------------


def test_certificate_without_critical_time_stamping_eku_is_refused() -> None:
    handle = _handle()
    not_critical = build_test_pki(handle, eku_critical=False)
    two_purposes = build_test_pki(handle, ekus=(ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING))
    for pki in (not_critical, two_purposes):
        with pytest.raises(TsaNotConfigured, match="timeStamping"):
            TimestampAuthority(handle, pki.certificate, pki.chain, policy_oid=POLICY, serials=CountingSerials())


def test_certificate_of_another_key_is_refused(pki: TsaTestPki) -> None:
    with pytest.raises(TsaNotConfigured, match="does not certify"):
        TimestampAuthority(_handle(), pki.certificate, pki.chain, policy_oid=POLICY, serials=CountingSerials())


def test_ed25519_key_and_bad_settings_are_refused(pki: TsaTestPki) -> None:
    edwards = SoftwareKeyHandle("ed", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(TsaNotConfigured, match="EC P-256/P-384 or RSA"):
        TimestampAuthority(edwards, pki.certificate, pki.chain, policy_oid=POLICY, serials=CountingSerials())
    with pytest.raises(TsaNotConfigured, match="dotted OID"):
        TimestampAuthority(pki.handle, pki.certificate, pki.chain, policy_oid="acar", serials=CountingSerials())
    with pytest.raises(TsaNotConfigured, match="positive"):
        TimestampAuthority(pki.handle, pki.certificate, pki.chain, policy_oid=POLICY, serials=CountingSerials(),
                           accuracy=dt.timedelta(0))


# --- the provider: refreshed every key cache time, refuses revoked and expired certificates -------------------


class Monotonic:
    """A monotonic clock the test moves by hand (the provider's refresh timer)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loads:
    """The provider's `load`: returns `current`, counts the calls, raises `failure` when set."""

    def __init__(self, current: TsaTestPki) -> None:
        self.current = current
        self.count = 0
        self.failure: Exception | None = None

    async def __call__(self) -> TsaTestPki:
        self.count += 1
        if self.failure is not None:
            raise self.failure
        return self.current


def _provider(loads: Loads, records: CertificateRecords, timer: Monotonic, *, refresh_seconds: float = 5,
              clock: Clock | None = None) -> TsaProvider:
    return TsaProvider(loads, policy_oid=POLICY, serials=CountingSerials(), statuses=records, issuer=ISSUER,
                       refresh_seconds=refresh_seconds, monotonic=timer, clock=clock or Clock())


async def _granted(provider: TsaProvider) -> TimestampReply:
    reply = await (await provider()).respond(_request("sha256", bytes(32)))
    assert reply.granted
    return reply


async def test_provider_builds_once_and_picks_up_a_renewed_certificate_at_the_next_refresh(pki: TsaTestPki) -> None:
    renewed = build_test_pki(_handle())
    loads, records, timer = Loads(pki), CertificateRecords(pki, renewed), Monotonic()
    provider = _provider(loads, records, timer)

    first = await provider()
    assert await provider() is first and (loads.count, records.lookups) == (1, 1)  # nothing per request
    loads.current = renewed
    timer.now += 4.9
    assert await provider() is first  # within the refresh time: still the certificate it loaded
    timer.now += 0.2
    second = await provider()
    assert second is not first and second.certificate.dump() == renewed.certificate.dump()
    assert (loads.count, records.lookups) == (2, 2)
    timer.now += 5.1
    assert await provider() is second and loads.count == 3  # looked again, same certificate: same authority


async def test_provider_stops_granting_within_the_refresh_time_once_its_certificate_is_revoked(
    pki: TsaTestPki,
) -> None:
    loads, records, timer = Loads(pki), CertificateRecords(pki), Monotonic()
    provider = _provider(loads, records, timer)
    await _granted(provider)

    records.revoke(pki)  # on another node: this one learns it at its next refresh
    timer.now += 5.0
    with pytest.raises(TsaNotConfigured, match=f"TSA certificate {pki.serial_hex} was revoked"):
        await provider()
    lookups = records.lookups
    timer.now += 4.9
    with pytest.raises(TsaNotConfigured, match="was revoked"):  # the refusal is kept: no query per request
        await provider()
    assert records.lookups == lookups

    renewed = build_test_pki(_handle())  # the CA issues a new TSA certificate (`acar init`, housekeeping)
    records.issue(renewed)
    loads.current = renewed
    timer.now += 0.1
    reply = await _granted(provider)
    assert (await provider()).certificate.dump() == renewed.certificate.dump() and reply.granted


async def test_provider_refreshes_when_its_certificate_expires_and_refuses_it(pki: TsaTestPki) -> None:
    soon = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=30)
    expiring = build_test_pki(_handle(), not_after=soon)
    clock = Clock(soon - dt.timedelta(seconds=2))
    loads, records, timer = Loads(expiring), CertificateRecords(expiring), Monotonic()
    provider = _provider(loads, records, timer, refresh_seconds=300, clock=clock)
    await _granted(provider)

    clock.now, timer.now = soon, timer.now + 2  # the refresh falls due at notAfter, not 300 s later
    with pytest.raises(TsaNotConfigured, match="is not valid at"):
        await provider()
    assert loads.count == 2


async def test_provider_refuses_a_certificate_unknown_to_the_certificates_table(pki: TsaTestPki) -> None:
    provider = _provider(Loads(pki), CertificateRecords(), Monotonic())

    with pytest.raises(TsaNotConfigured, match="is not one the test-issuing CA issued"):
        await provider()


async def test_provider_refuses_without_credentials_and_retries_after_infrastructure_errors(
    pki: TsaTestPki,
) -> None:
    loads, records, timer = Loads(pki), CertificateRecords(pki), Monotonic()
    provider = _provider(loads, records, timer)
    loads.failure = CANotInitialized("no valid tsa certificate (run `acar init`)")
    with pytest.raises(TsaNotConfigured, match="run `acar init`"):
        await provider()

    timer.now += 5
    loads.failure = OSError("database unreachable")  # not a verdict on the certificate: not kept
    with pytest.raises(OSError, match="unreachable"):
        await provider()
    loads.failure = None
    await _granted(provider)
    assert loads.count == 3


# --- through the key backends (software and the real SoftHSM2 token) -----------------------------------------


async def test_timestamp_signed_by_each_key_backend_verifies(
    backend: Backend, services: Services, data: Path, tmp_path: Path
) -> None:
    store = backend.new_store()
    async with services.sessions() as session, session.begin():
        handle = await store.generate(session, "EC-P256", purpose="tsa", label="tsa-test")
    pki = build_test_pki(handle)
    tsa = TimestampAuthority(handle, pki.certificate, pki.chain, policy_oid=POLICY, serials=CountingSerials())

    reply = await tsa.respond(openssl_query(tmp_path, data, "-sha256", "-cert"))

    assert reply.granted
    assert "Verification: OK" in _verify(tmp_path, pki, data, _save(tmp_path, reply), untrusted=False)


# --- the domain service: one entry point that answers and audits ---------------------------------------------


class GatedAudit:
    """An AuditSink whose writes finish only when the test opens the gate; remembers what it wrote."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.events: list[dict[str, object]] = []

    async def record(self, event_type: str, *, actor: str, subject: str | None = None,
                     detail: dict[str, Any] | None = None, request_id: str | None = None,
                     clock: dt.datetime | None = None) -> None:
        await self.gate.wait()
        self.events.append({"event_type": event_type, "actor": actor, "subject": subject, "detail": detail,
                            "request_id": request_id, "clock": clock})


class FailingAudit:
    async def record(self, event_type: str, **fields: object) -> None:
        raise OSError("audit database unreachable")


async def _the(authority: TimestampAuthority) -> TimestampAuthority:
    """A provider that always has this authority (the TsaProvider is tested above)."""
    return authority


async def test_service_returns_the_time_stamp_only_after_its_audit_event_is_written(
    authority: TimestampAuthority,
) -> None:
    audit = GatedAudit()
    service = TimestampService(functools.partial(_the, authority), audit)

    pending = asyncio.create_task(service.timestamp(_request("sha256", bytes(32)), actor="signer-1",
                                                    request_id="req-1"))
    for _ in range(20):  # the authority answers at once; the service still waits for the audit write
        await asyncio.sleep(0)
    assert not pending.done() and audit.events == []
    audit.gate.set()
    reply = await pending

    assert reply.granted
    assert audit.events == [{
        "event_type": "tsa.timestamp", "actor": "signer-1", "subject": str(reply.serial),
        "detail": {"serial": reply.serial, "hash_algorithm": "sha256", "policy": POLICY},
        "request_id": "req-1", "clock": reply.gen_time,
    }]
    assert tst_info(parse_reply(reply.der))["serial_number"].native == reply.serial


async def test_service_withholds_the_time_stamp_when_the_audit_write_fails(
    authority: TimestampAuthority, caplog: pytest.LogCaptureFixture,
) -> None:
    service = TimestampService(functools.partial(_the, authority), FailingAudit())

    with caplog.at_level("ERROR", logger="acar.tsa"):
        reply = await service.timestamp(_request("sha256", bytes(32)), actor="anonymous")

    assert not reply.granted and reply.failure == "system_failure"
    status = parse_reply(reply.der)
    assert status["status"].native["status"] == "rejection"
    assert status["status"].native["status_string"] == ["system failure"]
    assert isinstance(status["time_stamp_token"], core.Void)  # RFC 3161 2.4.2: no token beside a rejection
    assert "audit database unreachable" in (reply.detail or "")
    assert [r.msg for r in caplog.records] == ["tsa.system_failure"]


async def test_service_audits_no_rejection(authority: TimestampAuthority) -> None:
    audit = GatedAudit()
    audit.gate.set()
    service = TimestampService(functools.partial(_the, authority), audit)

    reply = await service.timestamp(_request("sha1", bytes(20)), actor="anonymous")

    assert reply.failure == "bad_alg" and audit.events == []


async def test_service_writes_the_audit_event_to_the_database(
    services: Services, authority: TimestampAuthority,
) -> None:
    service = TimestampService(functools.partial(_the, authority), services.audit_log)

    async with services.audit_log:  # the application's lifespan starts the group commit's consumers
        reply = await service.timestamp(_request("sha384", bytes(48)), actor="anonymous", request_id="req-db")

    async with services.sessions() as session:
        (event,) = (await session.execute(select(AuditEvent).where(AuditEvent.event_type == "tsa.timestamp"))
                    ).scalars()
    assert reply.granted and event.subject == str(reply.serial) and event.request_id == "req-db"
    assert event.detail == {"serial": reply.serial, "hash_algorithm": "sha384", "policy": POLICY}
