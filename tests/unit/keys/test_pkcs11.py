"""What only the PKCS#11 backend has: token attributes, configuration errors, the shared login, threads,
and token-signing keys on the token. The behaviour both backends share is in test_key_stores.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, MechanismFlag
from pkcs11.util.ec import encode_named_curve_parameters

import keys.pkcs11 as p11
from api.deps import Services
from keys.errors import BackendError, KeyNotFound
from keys.interfaces import KEY_TYPES, KeyHandle
from keys.pkcs11 import Pkcs11KeyStore
from keys.token_keys import TokenKeyService
from tests.softhsm import SoftHsmToken
from tests.unit.keys.conftest import pkcs11_store, verify

pytestmark = pytest.mark.pkcs11

ISSUER = "https://login.example.az"
SECRET_PARTS = {"EC-P256": Attribute.VALUE, "EC-P384": Attribute.VALUE, "Ed25519": Attribute.VALUE,
                "RSA-2048": Attribute.PRIVATE_EXPONENT, "RSA-3072": Attribute.PRIVATE_EXPONENT}


@pytest.fixture
def new_store(hsm_token: SoftHsmToken) -> Iterator[Callable[[], Pkcs11KeyStore]]:
    """Builds stores on the session's token, as a newly started process would; all are closed afterwards."""
    made: list[Pkcs11KeyStore] = []

    def build() -> Pkcs11KeyStore:
        made.append(pkcs11_store(hsm_token))
        return made[-1]

    yield build
    for built in made:
        built.close()


@pytest.fixture
def store(new_store: Callable[[], Pkcs11KeyStore]) -> Pkcs11KeyStore:
    return new_store()


@pytest.mark.parametrize("key_type", KEY_TYPES)
async def test_private_keys_are_sensitive_and_never_extractable_on_the_token(
    hsm_token: SoftHsmToken, store: Pkcs11KeyStore, services: Services, key_type: str
) -> None:
    async with services.sessions() as session, session.begin():
        handle = await store.generate(session, key_type, purpose="test", label="label-" + key_type)  # type: ignore[arg-type]
    objects = hsm_token.objects(handle.key_id)
    assert set(objects) == {"private", "public"}
    private = objects["private"]
    assert private[Attribute.SENSITIVE] is True and private[Attribute.ALWAYS_SENSITIVE] is True
    assert private[Attribute.EXTRACTABLE] is False and private[Attribute.NEVER_EXTRACTABLE] is True
    assert private[Attribute.PRIVATE] is True and private[Attribute.TOKEN] is True
    assert private[Attribute.SIGN] is True and private[Attribute.DECRYPT] is False  # a signing key only signs
    assert private[Attribute.LABEL] == "label-" + key_type
    with pytest.raises(pkcs11.AttributeSensitive):  # the token refuses to show the secret part to anyone
        hsm_token.read_private(handle.key_id, SECRET_PARTS[key_type])


def test_missing_module_names_the_setting(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"^ACAR_PKCS11_MODULE: cannot use the PKCS#11 module /nonexistent/lib"):
        Pkcs11KeyStore(module_path="/nonexistent/libpkcs11.so", token_label=softhsm_token.label, pin=softhsm_token.pin)
    not_a_module = tmp_path / "libfake.so"
    not_a_module.write_bytes(b"not an ELF file")
    with pytest.raises(BackendError, match="^ACAR_PKCS11_MODULE: .*libfake.so"):
        Pkcs11KeyStore(module_path=str(not_a_module), token_label=softhsm_token.label, pin=softhsm_token.pin)


def test_wrong_token_label_names_the_setting(softhsm_token: SoftHsmToken) -> None:
    with pytest.raises(BackendError, match=r"^ACAR_PKCS11_TOKEN_LABEL: no token labelled 'acar-nope'"):
        Pkcs11KeyStore(module_path=softhsm_token.module, token_label="acar-nope", pin=softhsm_token.pin)


@pytest.mark.parametrize(("module", "label", "pin", "setting"), [
    ("", "x", "1234", "ACAR_PKCS11_MODULE"), ("m", "", "1234", "ACAR_PKCS11_TOKEN_LABEL"),
    ("m", "x", "", "ACAR_PKCS11_PIN"),
])
def test_unset_settings_are_named(module: str, label: str, pin: str, setting: str) -> None:
    with pytest.raises(BackendError, match=f"^{setting} is not set"):
        Pkcs11KeyStore(module_path=module, token_label=label, pin=pin)


def test_wrong_pin_is_refused_by_the_token(softhsm_token: SoftHsmToken) -> None:
    assert not p11._LOGINS, "no store of this process may be logged in: this test needs a real C_Login"
    for _ in range(3):  # the token keeps refusing, and a right PIN still works afterwards
        with pytest.raises(BackendError, match=f"^ACAR_PKCS11_PIN: the token '{softhsm_token.label}' refused"):
            Pkcs11KeyStore(module_path=softhsm_token.module, token_label=softhsm_token.label, pin="999999")
    pkcs11_store(softhsm_token).close()


def test_wrong_pin_is_refused_while_another_store_is_logged_in(hsm_token: SoftHsmToken) -> None:
    with pytest.raises(BackendError, match=f"^ACAR_PKCS11_PIN: wrong PIN for token '{hsm_token.label}'"):
        Pkcs11KeyStore(module_path=hsm_token.module, token_label=hsm_token.label, pin=hsm_token.pin + "0")


async def test_stores_share_the_login_and_closing_one_keeps_the_other_signing(
    softhsm_token: SoftHsmToken, services: Services
) -> None:
    first, second = pkcs11_store(softhsm_token), pkcs11_store(softhsm_token)
    try:
        async with services.sessions() as session, session.begin():
            handle = await first.generate(session, "EC-P256", purpose="test", label="shared")
        second.close()  # must not log `first` out (C_Logout would end every session's login)
        verify(handle.public_key(), await handle.sign(b"still logged in"), b"still logged in")
        async with services.sessions() as session:
            with pytest.raises(BackendError, match="closed"):
                await second.load(session, handle.key_id)
        first.close()  # the last store logs out: the handle can no longer reach its key, and says so
        with pytest.raises(BackendError, match=f"refused to sign with key {handle.key_id}"):
            await handle.sign(b"logged out")
    finally:
        first.close()  # closing twice is harmless
        second.close()


async def test_concurrent_signing_from_many_threads(
    new_store: Callable[[], Pkcs11KeyStore], services: Services
) -> None:
    stores = [new_store(), new_store()]
    async with services.sessions() as session, session.begin():
        handles: list[KeyHandle] = [
            await stores[0].generate(session, "EC-P256", purpose="test", label="t1"),
            await stores[1].generate(session, "RSA-2048", purpose="test", label="t2"),
        ]
    errors: list[BaseException] = []

    async def sign_many(n: int) -> None:
        for i in range(25):
            handle = handles[(n + i) % 2]
            data = b"thread %d message %d" % (n, i)
            verify(handle.public_key(), await handle.sign(data), data)

    def worker(n: int) -> None:  # an event loop of its own per thread: the module's workers serve them all
        try:
            asyncio.run(sign_many(n))
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    # meanwhile the event loop generates (in a worker thread) and finds keys on the same token
    async with services.sessions() as session, session.begin():
        extra = await stores[0].generate(session, "RSA-2048", purpose="test", label="t3")
    async with services.sessions() as session:
        found = await new_store().load(session, extra.key_id)
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert await found.sign(b"x")
    assert not any(thread.is_alive() for thread in threads)


async def test_signing_goes_on_while_an_rsa_3072_key_pair_is_generated(
    store: Pkcs11KeyStore, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation on the HSM must not stall requests: RSA-3072 generation takes the token seconds, and the
    event loop keeps signing (through the module's signing workers) in the shared session meanwhile."""
    assert store.threaded  # SoftHSM2 took CKF_OS_LOCKING_OK: without it, calls into the module must not overlap
    async with services.sessions() as session, session.begin():
        signer = await store.generate(session, "EC-P256", purpose="test", label="serving")
    started, finished = threading.Event(), threading.Event()
    times: dict[str, float] = {}
    generate_on_token = store._generate_on_token

    def timed_generation(*args: str) -> object:  # in the worker thread
        times["started"] = time.perf_counter()
        started.set()
        try:
            return generate_on_token(*args)  # type: ignore[arg-type]
        finally:
            times["finished"] = time.perf_counter()
            finished.set()

    monkeypatch.setattr(store, "_generate_on_token", timed_generation)
    signed: list[float] = []
    async with services.sessions() as session, session.begin():
        generation = asyncio.create_task(store.generate(session, "RSA-3072", purpose="test", label="rotation"))
        assert await asyncio.to_thread(started.wait, 60)
        while not finished.is_set():  # one signature after the other, as requests would ask for them
            verify(signer.public_key(), await signer.sign(b"a request"), b"a request")
            signed.append(time.perf_counter())
        rotated = await generation

    generating = times["finished"] - times["started"]
    first = signed[0] - times["started"]
    assert first < generating / 2, f"the first signature took {first:.3f} s of a {generating:.3f} s generation"
    assert sum(t < times["finished"] for t in signed) >= 3
    verify(rotated.public_key(), await rotated.sign(b"new key"), b"new key")


def test_a_module_that_cannot_be_initialised_for_threads_is_used_single_threaded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="acar.keys.pkcs11"):
        assert p11._initialize_for_threads("/nonexistent/libpkcs11-not-loaded.so") is False
    assert [r.msg for r in caplog.records] == ["pkcs11.single_threaded"]


async def test_keys_of_the_other_backend_are_not_found(store: Pkcs11KeyStore, services: Services) -> None:
    async with services.sessions() as session, session.begin():
        software_key = await services.key_store.generate(session, "EC-P256", purpose="test", label="sw")
        token_key = await store.generate(session, "EC-P256", purpose="test", label="hsm")
    fresh = services.key_store
    async with services.sessions() as session:
        with pytest.raises(KeyNotFound):
            await store.load(session, software_key.key_id)
        with pytest.raises(KeyNotFound):
            await store.destroy(session, software_key.key_id)
        with pytest.raises(KeyNotFound):
            await fresh.load(session, token_key.key_id)


async def test_a_key_recorded_but_gone_from_the_token_is_key_not_found(
    hsm_token: SoftHsmToken, new_store: Callable[[], Pkcs11KeyStore], services: Services
) -> None:
    store = new_store()
    async with services.sessions() as session, session.begin():
        handle = await store.generate(session, "EC-P256", purpose="test", label="gone")
    hsm_token.destroy_objects(handle.key_id)
    async with services.sessions() as session:
        with pytest.raises(KeyNotFound, match="not on the token"):
            await new_store().load(session, handle.key_id)


async def test_adopt_records_an_existing_key_pair(
    hsm_token: SoftHsmToken, new_store: Callable[[], Pkcs11KeyStore], services: Services
) -> None:
    with hsm_token.session(rw=True) as p11_session:  # a key pair made by another tool: no CKA_ID
        params = p11_session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp384r1")}, local=True)
        params.generate_keypair(label="imported-issuing-ca", store=True,
                                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
    store = new_store()
    async with services.sessions() as session, session.begin():
        handle = await store.adopt(session, token_label="imported-issuing-ca", purpose="ca")
    assert handle.key_type == "EC-P384"
    assert set(hsm_token.objects(handle.key_id)) == {"private", "public"}  # CKA_ID now names the key
    async with services.sessions() as session:
        loaded = await new_store().load(session, handle.key_id)
        assert await store.adopt(session, token_label="imported-issuing-ca", purpose="ca") is handle
    verify(loaded.public_key(), await loaded.sign(b"crl", "sha384"), b"crl", "sha384")
    async with services.sessions() as session:
        with pytest.raises(KeyNotFound):
            await store.adopt(session, token_label="no-such-pair", purpose="ca")


async def test_token_keys_on_the_token_ensure_rotate_publish_and_remove(
    hsm_token: SoftHsmToken, store: Pkcs11KeyStore, services: Services
) -> None:
    now = [dt.datetime.now(dt.UTC)]
    service = TokenKeyService(
        services.sessions, store, algorithms=["ES256", "RS256", "EdDSA"], rotation_interval=dt.timedelta(days=30),
        max_token_lifetime=dt.timedelta(hours=1), cache_seconds=0, clock=lambda: now[0],
    )
    async with services.sessions() as session, session.begin():
        created = await service.ensure_keys(session)
    assert len(created) == 6
    for kid in created:
        assert set(hsm_token.objects(kid)) == {"private", "public"}
    jwks = dict(await service.jwks())
    assert {k["kid"] for k in jwks["keys"]} == set(created)

    def claims() -> dict[str, object]:
        issued = int(time.time())
        return {"iss": ISSUER, "sub": "5ABC12D", "aud": "rp", "iat": issued, "exp": issued + 600}

    def pyjwt_verify(token_text: str, keyset: dict[str, object], alg: str) -> None:
        kid = jwt.get_unverified_header(token_text)["kid"]
        key = {k.key_id: k for k in jwt.PyJWKSet.from_dict(keyset).keys}[kid]
        assert jwt.decode(token_text, key=key, algorithms=[alg], audience="rp", issuer=ISSUER)["sub"] == "5ABC12D"

    before = {alg: await (await service.signer(alg)).sign(claims()) for alg in service.algorithms}
    for alg, signed in before.items():
        pyjwt_verify(signed, jwks, alg)

    async with services.sessions() as session, session.begin():
        changes = await service.rotate(session, actor="test", force=True)
    assert len(changes) == 3
    jwks = dict(await service.jwks())
    assert len(jwks["keys"]) == 9  # retired, current and a new next for each algorithm
    after = {alg: await (await service.signer(alg)).sign(claims()) for alg in service.algorithms}
    for alg in service.algorithms:
        change = next(c for c in changes if c["alg"] == alg)
        assert jwt.get_unverified_header(after[alg])["kid"] == change["current"]
        pyjwt_verify(before[alg], jwks, alg)  # tokens of the retired key still verify
        pyjwt_verify(after[alg], jwks, alg)
        assert set(hsm_token.objects(str(change["next"]))) == {"private", "public"}

    now[0] += dt.timedelta(hours=2)  # every token of the retired keys has expired
    async with services.sessions() as session, session.begin():
        removed = await service.remove_expired(session, actor="test")
    assert sorted(removed) == sorted(str(c["retired"]) for c in changes)
    for kid in removed:
        assert hsm_token.objects(kid) == {}  # destroyed on the token
    jwks = dict(await service.jwks())
    assert len(jwks["keys"]) == 6 and not {k["kid"] for k in jwks["keys"]} & set(removed)


async def test_the_worker_thread_answers_each_call_in_order_skips_a_cancelled_one_and_raises_errors() -> None:
    """keys.pkcs11._Worker, the module's one calling thread: results and exceptions reach their callers' futures,
    in the order the calls came; a call whose caller went away before its turn is never made."""
    worker = p11._Worker("acar-pkcs11-test")
    release = threading.Event()
    made: list[str] = []

    def call(name: str) -> str:
        if name == "first":
            release.wait(10)  # the token is busy: later calls queue behind this one
        if name == "bad":
            raise BackendError("the token refused")
        made.append(name)
        return name.upper()

    first = worker.submit(call, ("first",))
    gone = worker.submit(call, ("gone",))
    bad = worker.submit(call, ("bad",))
    last = worker.submit(call, ("last",))
    gone.cancel()
    release.set()
    assert await first == "FIRST"
    with pytest.raises(BackendError, match="refused"):
        await bad
    assert await last == "LAST"
    assert made == ["first", "last"]
    worker._stop()  # what interpreter exit does: the thread ends once the queue is empty
    assert worker._thread is not None
    assert not worker._thread.is_alive()
