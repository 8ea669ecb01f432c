"""api.validation.ValidationService's trust lifecycle: the trusted list reloaded every hour; a failed reload keeps
the previous list answering while that list is current (before its NextUpdate, ETSI TS 119 612 section 5.3.15),
is retried a minute later rather than on every request, and fails closed (503) once no current list is left."""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import x509
from cryptography.hazmat.primitives.serialization import Encoding

from api.validation import TRUST_RETRY, TRUSTED_LIST_REFRESH, ValidationService
from signing.core.errors import ValidationUnavailable
from signing.core.inspect import InputPolicy
from signing.core.trust import TrustPolicy
from signing.core.trustlist import TrustedList
from signing.core.validation import Validator
from tests.pki_tools import foreign_ca
from tests.trustlist_tools import GRANTED, ListInfo, Operator, Service, Status

pytestmark = pytest.mark.nodb  # no database: run once, in the SQLite pass (Makefile)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


class Loader:
    """The trust loader api/deps.py gives the service, here answering a real, signed trusted list or failing."""

    def __init__(self, policy: TrustPolicy) -> None:
        self.policy = policy
        self.fail = False
        self.calls = 0

    async def __call__(self) -> TrustPolicy:
        self.calls += 1
        if self.fail:
            raise ValidationUnavailable("the trusted list cannot be used: the list's server is down")
        return self.policy


@pytest.fixture
def policy() -> TrustPolicy:
    operator = Operator.create(now=NOW)
    ca, _ = foreign_ca(NOW)
    xml = operator.publish([Service("Test CA/QC", ca, (Status(GRANTED, NOW - dt.timedelta(days=10)),))],
                           ListInfo(issued=NOW - dt.timedelta(days=1), next_update=NOW + dt.timedelta(days=1)))
    signer = x509.Certificate.load(operator.certificate.public_bytes(Encoding.DER))
    trusted_list = TrustedList.parse(xml, [signer], at=NOW)
    return TrustPolicy(anchors=(), sources=(), trusted_list=trusted_list)


async def _factory(policy: TrustPolicy) -> Validator:
    return Validator(trust=policy, input_policy=InputPolicy(), fetching=None)


async def test_a_failed_reload_keeps_the_current_list_then_fails_closed(policy: TrustPolicy) -> None:
    loader = Loader(policy)
    monotonic, now = [0.0], [NOW]
    service = ValidationService(trust=loader, validator=_factory, audit=None,  # type: ignore[arg-type]  # unused
                                address_key=b"k", monotonic=lambda: monotonic[0], clock=lambda: now[0])
    first = await service.validator()
    assert loader.calls == 1 and await service.validator() is first

    loader.fail = True
    monotonic[0] = TRUSTED_LIST_REFRESH.total_seconds() + 1  # the hourly reload fails: the list is still current
    assert await service.validator() is first and loader.calls == 2
    monotonic[0] += 1  # within TRUST_RETRY: no new attempt
    assert await service.validator() is first and loader.calls == 2

    now[0] = NOW + dt.timedelta(days=2)  # the previous list is past its NextUpdate: fail closed
    with pytest.raises(ValidationUnavailable, match="server is down"):
        await service.validator()
    assert loader.calls == 2
    monotonic[0] += TRUST_RETRY.total_seconds()  # the retry, still failing
    with pytest.raises(ValidationUnavailable):
        await service.validator()
    assert loader.calls == 3

    loader.fail = False
    service.expire()  # the operator fixed the list
    assert await service.validator() is not first and loader.calls == 4


async def test_without_a_previous_list_a_failure_is_the_answer_until_the_retry(policy: TrustPolicy) -> None:
    loader = Loader(policy)
    loader.fail = True
    monotonic = [0.0]
    service = ValidationService(trust=loader, validator=_factory, audit=None,  # type: ignore[arg-type]  # unused
                                address_key=b"k", monotonic=lambda: monotonic[0])
    for _ in range(3):
        with pytest.raises(ValidationUnavailable):
            await service.validator()
    assert loader.calls == 1
    loader.fail = False
    monotonic[0] = TRUST_RETRY.total_seconds() + 1
    assert isinstance(await service.validator(), Validator) and loader.calls == 2
