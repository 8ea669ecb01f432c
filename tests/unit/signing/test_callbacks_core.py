"""signing.core.callbacks without a database: which addresses the production policy refuses (SSRF), the backoff's
bounds, the event's claims, the policy's own checks."""

from __future__ import annotations

import datetime as dt
import ipaddress
import warnings

import pytest

from api.app import create_app
from api.settings import Settings
from signing.core.callbacks import MAX_RETRY, CallbackEvent, CallbackPolicy, refused_address, retry_delay

REFUSED = ["127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
           "0.0.0.0", "192.0.2.1", "198.18.0.1", "240.0.0.1", "224.0.0.1", "255.255.255.255", "::1", "::",  # noqa: S104 - addresses refused, nothing binds
           "fe80::1", "fc00::1", "fd12:3456::1", "2001:db8::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "ff02::1"]
PUBLIC = ["8.8.8.8", "93.184.216.34", "185.18.244.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address), ())


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not refused_address(ipaddress.ip_address(address), ())


def test_allowed_networks_open_only_themselves() -> None:
    allowed = (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd00:1::/32"))
    assert not refused_address(ipaddress.ip_address("10.20.30.40"), allowed)
    assert not refused_address(ipaddress.ip_address("::ffff:10.20.30.40"), allowed)
    assert not refused_address(ipaddress.ip_address("fd00:1::5"), allowed)
    assert refused_address(ipaddress.ip_address("10.21.0.1"), allowed)
    assert refused_address(ipaddress.ip_address("127.0.0.1"), allowed)


def test_retry_delay_doubles_with_jitter_up_to_the_cap() -> None:
    for attempts in range(1, 30):
        base = min(5.0 * 2 ** (attempts - 1), MAX_RETRY)
        for _ in range(20):
            delay = retry_delay(attempts).total_seconds()
            assert base / 2 <= delay <= base
    assert len({retry_delay(3) for _ in range(20)}) > 1  # jittered
    assert retry_delay(2, first=0.01, cap=0.015).total_seconds() <= 0.015


def test_event_claims() -> None:
    completed = CallbackEvent(request_id="r1", state="completed", documents=((1, "a" * 64), (2, "b" * 64)))
    assert completed.claims() == {"request_id": "r1", "state": "completed", "failure": None,
                                  "documents": [{"n": 1, "sha256": "a" * 64}, {"n": 2, "sha256": "b" * 64}]}
    failed = CallbackEvent(request_id="r2", state="failed", failure_code="damaged_pdf", failure_detail="bad xref")
    assert failed.claims()["failure"] == {"code": "damaged_pdf", "detail": "bad xref"}
    assert failed.claims()["documents"] == []


def test_policy_durations_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        CallbackPolicy(issuer="https://acar.example", max_age=dt.timedelta(0), timeout=5, refuse_private=True,
                       require_https=True)
    with pytest.raises(ValueError, match="positive"):
        CallbackPolicy(issuer="https://acar.example", max_age=dt.timedelta(hours=1), timeout=0,
                       refuse_private=True, require_https=True)


def test_the_completion_callback_is_in_the_openapi_document(settings: Settings) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doc = create_app(settings).openapi()
    create = doc["paths"]["/api/v1/signing-requests"]["post"]
    callback = create["callbacks"]["completion"]["{$request.body#/callback_url}"]["post"]
    assert list(callback["requestBody"]["content"]) == ["application/jwt"]
    assert "signing-callback+jwt" in callback["description"] and "2XX" in callback["responses"]
