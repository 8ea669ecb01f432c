"""Levels of assurance of passkeys and attestation trust, with real crypto: a test vendor root (and intermediate) CA
whose attestation certificates the software authenticator puts in a "packed" x5c chain, and a FIDO MDS3 BLOB signed
by a test Metadata Service root. Level high needs an attestation that chains to a configured root (a PEM bundle, or
the roots of a verified MDS BLOB entry whose status is not compromised); everything else is substantial at most."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import _housekeeping
from api.deps import Services, build_passkeys
from api.settings import Settings
from idp.core.attestation import AttestationConfigError, MetadataRefused, build_trust, verify_metadata_blob
from tests.fido_mds import MetadataService
from tests.oidc_tools import Registered, redeem, register_client
from tests.unit.idp.test_webauthn import (
    FIN_A,
    credential_row,
    enrolled,
    id_token_claims,
    pre_consent,
    query,
    refused_login,
    start,
)
from tests.webauthn_authenticator import AttestationCa, SoftwareAuthenticator, attested_authenticator, passkey_login

MODEL = bytes.fromhex("6e5b9b4c0d8a4f1e9a3c2b7d1e0f4a55")
MODEL_ID = str(uuid.UUID(bytes=MODEL))


@dataclass
class Recording(SoftwareAuthenticator):
    """Notes the attestation conveyance each registration asked for."""

    asked: list[str] = field(default_factory=list)

    def create(self, options: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
        self.asked.append(str(options.get("attestation")))
        return super().create(options, **kw)


def configure(services: Services, **files: object) -> None:
    """Rebuild the passkey service from settings with these ACAR_WEBAUTHN_* values (as `acar serve` would)."""
    services.passkeys = build_passkeys(services.settings.model_copy(update=files))


async def login_level(services: Services, http: httpx.AsyncClient, rp: Registered,
                      authenticator: SoftwareAuthenticator) -> str:
    """A passkey login without acr_values, in a fresh browser state, through to the ID token: its level."""
    http.cookies.clear()
    started = await start(services, http, rp)
    r = await passkey_login(http, started.pending_id, started.csrf, authenticator)
    assert r.status_code == 200, r.text
    code = query(r.json()["redirect"])["code"]
    tokens = (await redeem(http, rp, code, started.verifier)).json()
    claims = await id_token_claims(http, services, rp, tokens["id_token"])
    levels = {v: k for k, v in services.settings.acr_values.items()}
    return levels[claims["acr"]]


async def ready_rp(services: Services) -> Registered:
    rp = await register_client(services)
    await pre_consent(services, rp)
    return rp


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def vendor() -> AttestationCa:
    return AttestationCa()


@pytest.fixture
def mds() -> MetadataService:
    return MetadataService()


# --- without attestation: substantial -----------------------------------------------------------------------

async def test_no_attestation_is_substantial(initialized: Services, client: httpx.AsyncClient) -> None:
    """The default (no trust configured): a device-bound, user-verified passkey without attestation is substantial
    (it was high before), attestation "none" is asked for, and a request for high is refused."""
    authenticator = Recording()
    await enrolled(initialized, client, FIN_A, authenticator)
    assert authenticator.asked == ["none"]
    rp = await ready_rp(initialized)
    assert await login_level(initialized, client, rp, authenticator) == "substantial"
    client.cookies.clear()
    await refused_login(initialized, client, rp, authenticator, (400, "insufficient_level"),
                        acr=initialized.settings.acr_high)


async def test_unverified_attestation_without_trust_is_substantial(initialized: Services, client: httpx.AsyncClient,
                                                                   vendor: AttestationCa) -> None:
    """A packed attestation is not trusted by itself: with no roots configured it gives substantial."""
    authenticator = attested_authenticator(vendor, aaguid=MODEL)
    await enrolled(initialized, client, FIN_A, authenticator)
    rp = await ready_rp(initialized)
    assert await login_level(initialized, client, rp, authenticator) == "substantial"


# --- explicit roots (ACAR_WEBAUTHN_ATTESTATION_ROOTS_FILE) ----------------------------------------------------

@pytest.mark.parametrize("intermediate", [False, True])
async def test_packed_attestation_chaining_to_configured_roots_is_high(
        initialized: Services, client: httpx.AsyncClient, vendor: AttestationCa, tmp_path: Path,
        intermediate: bool) -> None:
    other = AttestationCa("Another Vendor Root")
    configure(initialized, webauthn_attestation_roots_file=write(tmp_path / "roots.pem", other.pem + vendor.pem))
    client.cookies.clear()
    issuer = AttestationCa("Vendor Issuing CA", parent=vendor) if intermediate else vendor
    authenticator = attested_authenticator(issuer, aaguid=MODEL)
    assert len(authenticator.attestation_chain) == (2 if intermediate else 1)
    await enrolled(initialized, client, FIN_A, authenticator)
    credential_id = next(iter(authenticator.credentials))
    row = await credential_row(initialized, credential_id)
    assert row.attested is True and row.attestation_root is not None and len(row.attestation_root) == 64
    rp = await ready_rp(initialized)
    assert await login_level(initialized, client, rp, authenticator) == "high"
    client.cookies.clear()
    started = await start(initialized, client, rp, acr_values=initialized.settings.acr_high)
    r = await passkey_login(client, started.pending_id, started.csrf, authenticator)
    assert r.status_code == 200, r.text


async def test_chain_to_an_unknown_root_is_substantial(initialized: Services, client: httpx.AsyncClient,
                                                      vendor: AttestationCa, tmp_path: Path) -> None:
    """Policy: an attestation that chains to no configured root is not refused; the passkey is registered at
    substantial (registration asked for "direct" attestation because roots are configured)."""
    configure(initialized, webauthn_attestation_roots_file=write(tmp_path / "roots.pem", vendor.pem))
    stranger = attested_authenticator(AttestationCa("Unknown Vendor Root"), aaguid=MODEL)
    await enrolled(initialized, client, FIN_A, stranger)
    row = await credential_row(initialized, next(iter(stranger.credentials)))
    assert row.attested is False and row.attestation_root is None and row.attestation_format == "packed"
    rp = await ready_rp(initialized)
    assert await login_level(initialized, client, rp, stranger) == "substantial"


async def test_a_root_withdrawn_from_the_bundle_drops_to_substantial(
        initialized: Services, client: httpx.AsyncClient, vendor: AttestationCa, tmp_path: Path) -> None:
    """The root is re-checked at each login against the trust of that moment."""
    other = AttestationCa("Another Vendor Root")
    configure(initialized, webauthn_attestation_roots_file=write(tmp_path / "roots.pem", vendor.pem + other.pem))
    authenticator = await enrolled(initialized, client, FIN_A, attested_authenticator(vendor, aaguid=MODEL))
    rp = await ready_rp(initialized)
    assert await login_level(initialized, client, rp, authenticator) == "high"
    configure(initialized, webauthn_attestation_roots_file=write(tmp_path / "roots.pem", other.pem))
    assert await login_level(initialized, client, rp, authenticator) == "substantial"


async def test_allowlist_restricts_high(initialized: Services, client: httpx.AsyncClient, vendor: AttestationCa,
                                        tmp_path: Path) -> None:
    configure(initialized, webauthn_attestation_roots_file=write(tmp_path / "roots.pem", vendor.pem),
              webauthn_aaguid_allowlist=[str(uuid.UUID(bytes=bytes(range(16))))])
    authenticator = await enrolled(initialized, client, FIN_A, attested_authenticator(vendor, aaguid=MODEL))
    rp = await ready_rp(initialized)
    assert await login_level(initialized, client, rp, authenticator) == "substantial"


# --- the FIDO Metadata Service BLOB (ACAR_WEBAUTHN_MDS_BLOB_FILE) --------------------------------------------

async def test_mds_entry_roots_give_high(initialized: Services, client: httpx.AsyncClient, vendor: AttestationCa,
                                         mds: MetadataService, tmp_path: Path) -> None:
    blob = write(tmp_path / "blob.jwt", mds.blob([mds.entry(MODEL_ID, [vendor.pem])]))
    configure(initialized, webauthn_mds_blob_file=blob, webauthn_mds_root_file=write(tmp_path / "mds.pem",
                                                                                        mds.root_pem))
    authenticator = await enrolled(initialized, client, FIN_A, attested_authenticator(vendor, aaguid=MODEL))
    rp = await ready_rp(initialized)
    assert await login_level(initialized, client, rp, authenticator) == "high"
    # another model chaining to the same root is not in the BLOB: no roots for it
    other = attested_authenticator(vendor, aaguid=bytes(range(16)))
    await enrolled(initialized, client, "6XYZ789", other)
    await pre_consent(initialized, rp, "6XYZ789")
    assert await login_level(initialized, client, rp, other) == "substantial"


@pytest.mark.parametrize("bad", ["signature", "expired", "unknown_root", "rollback"])
async def test_refused_blob_is_logged_and_the_last_good_kept(
        initialized: Services, client: httpx.AsyncClient, *, vendor: AttestationCa, mds: MetadataService,
        tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str) -> None:
    """A BLOB whose signature fails, whose nextUpdate has passed, whose chain leads to another root, or whose
    serial number is not newer is refused at refresh, logged, and the BLOB in force stays (FIDO MDS3 3.2)."""
    blob = write(tmp_path / "blob.jwt", mds.blob([mds.entry(MODEL_ID, [vendor.pem])], no=5))
    configure(initialized, webauthn_mds_blob_file=blob, webauthn_mds_root_file=write(tmp_path / "mds.pem",
                                                                                        mds.root_pem))
    trust = initialized.passkeys.rp.attestation
    assert trust.current().blob is not None and trust.current().blob.number == 5  # type: ignore[union-attr]
    revoked = [mds.entry(MODEL_ID, [vendor.pem], statuses=["FIDO_CERTIFIED_L1", "REVOKED"])]
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    replacement = {
        "signature": mds.blob(revoked, no=6, tamper=True),
        "expired": mds.blob(revoked, no=6, next_update=yesterday),
        "unknown_root": MetadataService("Impostor MDS Root").blob(revoked, no=6),
        "rollback": mds.blob(revoked, no=4),
    }[bad]
    write(blob, replacement)
    with caplog.at_level(logging.WARNING, logger="acar.webauthn"):
        assert trust.refresh() is False
    refusals = [r for r in caplog.records if r.getMessage() == "webauthn.mds_refused"]
    assert len(refusals) == 1 and refusals[0].kept == 5, caplog.records  # type: ignore[attr-defined]
    assert trust.current().blob.number == 5  # type: ignore[union-attr]
    authenticator = await enrolled(initialized, client, FIN_A, attested_authenticator(vendor, aaguid=MODEL))
    rp = await ready_rp(initialized)
    assert await login_level(initialized, client, rp, authenticator) == "high"


async def test_bad_blob_at_start_gives_no_trust(initialized: Services, client: httpx.AsyncClient, *,
                                                vendor: AttestationCa, mds: MetadataService, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    blob = write(tmp_path / "blob.jwt", mds.blob([mds.entry(MODEL_ID, [vendor.pem])], tamper=True))
    with caplog.at_level(logging.WARNING, logger="acar.webauthn"):
        configure(initialized, webauthn_mds_blob_file=blob,
                  webauthn_mds_root_file=write(tmp_path / "mds.pem", mds.root_pem))
    assert [r.getMessage() for r in caplog.records].count("webauthn.mds_refused") == 1
    assert not initialized.passkeys.rp.attestation.current().configured
    authenticator = await enrolled(initialized, client, FIN_A, attested_authenticator(vendor, aaguid=MODEL))
    rp = await ready_rp(initialized)
    assert await login_level(initialized, client, rp, authenticator) == "substantial"


async def test_revoked_status_drops_to_substantial_at_the_next_login(
        initialized: Services, client: httpx.AsyncClient, vendor: AttestationCa, mds: MetadataService,
        tmp_path: Path) -> None:
    """A model reported REVOKED in a newer BLOB, picked up by housekeeping, logs in at substantial."""
    blob = write(tmp_path / "blob.jwt", mds.blob([mds.entry(MODEL_ID, [vendor.pem])], no=1))
    configure(initialized, webauthn_mds_blob_file=blob, webauthn_mds_root_file=write(tmp_path / "mds.pem",
                                                                                        mds.root_pem))
    authenticator = await enrolled(initialized, client, FIN_A, attested_authenticator(vendor, aaguid=MODEL))
    rp = await ready_rp(initialized)
    assert await login_level(initialized, client, rp, authenticator) == "high"

    write(blob, mds.blob([mds.entry(MODEL_ID, [vendor.pem], statuses=["FIDO_CERTIFIED_L1", "REVOKED"])], no=2))
    passed = asyncio.Event()
    task = asyncio.create_task(_housekeeping(initialized, 3600, None, passed))
    try:
        await asyncio.wait_for(passed.wait(), timeout=60)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert initialized.passkeys.rp.attestation.current().blob.number == 2  # type: ignore[union-attr]
    assert await login_level(initialized, client, rp, authenticator) == "substantial"
    client.cookies.clear()
    await refused_login(initialized, client, rp, authenticator, (400, "insufficient_level"),
                        acr=initialized.settings.acr_high)
    # and a new registration of the model is not attested either
    again = await enrolled(initialized, client, "6XYZ789", attested_authenticator(vendor, aaguid=MODEL))
    row = await credential_row(initialized, next(iter(again.credentials)))
    assert row.attestation_root is None


def test_blob_verification_refusals(vendor: AttestationCa, mds: MetadataService) -> None:
    today = dt.datetime.now(dt.UTC).date()
    good = mds.blob([mds.entry(MODEL_ID, [vendor.pem])], no=3)
    verified = verify_metadata_blob(good, roots=[mds.root_pem], today=today)
    assert verified.number == 3 and list(verified.entries) == [MODEL_ID]
    for data, reason in [
        (mds.blob([], tamper=True), "signature does not verify"),
        (mds.blob([], next_update=today - dt.timedelta(days=1)), "has passed"),
        (MetadataService("Other").blob([]), "does not chain"),
        (b"not a jws", "not a compact JWS"),
    ]:
        with pytest.raises(MetadataRefused, match=reason):
            verify_metadata_blob(data, roots=[mds.root_pem], today=today)


def test_settings(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ValueError, match="ACAR_WEBAUTHN_MDS_ROOT_FILE"):
        Settings(webauthn_mds_blob_file=tmp_path / "blob.jwt")
    with pytest.raises(AttestationConfigError, match="ACAR_WEBAUTHN_ATTESTATION_ROOTS_FILE"):
        build_passkeys(settings.model_copy(update={"webauthn_attestation_roots_file": tmp_path / "missing.pem"}))
    with pytest.raises(AttestationConfigError, match="ACAR_WEBAUTHN_MDS_ROOT_FILE"):
        build_passkeys(settings.model_copy(update={"webauthn_mds_blob_file": tmp_path / "blob.jwt",
                                                    "webauthn_mds_root_file": write(tmp_path / "r.pem", b"junk")}))


def test_a_blob_in_force_that_goes_stale_is_kept_with_one_warning(
        vendor: AttestationCa, mds: MetadataService, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The last good BLOB stays in force after its nextUpdate (its statuses are the newest known), warned once."""
    now = [dt.datetime.now(dt.UTC)]
    blob = write(tmp_path / "blob.jwt", mds.blob([mds.entry(MODEL_ID, [vendor.pem])],
                                                 next_update=now[0].date() + dt.timedelta(days=1)))
    trust = build_trust(roots_file=None, blob_file=blob, mds_root_file=write(tmp_path / "mds.pem", mds.root_pem),
                        allowlist=[], clock=lambda: now[0])
    assert trust.current().roots_for(MODEL_ID)
    now[0] += dt.timedelta(days=3)
    with caplog.at_level(logging.WARNING, logger="acar.webauthn"):
        assert trust.refresh() is False
        assert trust.refresh() is False
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == ["webauthn.mds_stale"]
    assert trust.current().roots_for(MODEL_ID)
