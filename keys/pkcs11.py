"""PKCS#11 key backend: private keys generated and kept on a hardware security module.

Any PKCS#11 module works (configured by module path, token label and PIN); the tests use SoftHSM2 through
the same interface. Private keys are created with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false, so the token
refuses to export them; Açar only ever asks the token to sign. The database keeps the metadata (CKA_ID is
the key id) and the public key.

ECDSA uses CKM_ECDSA over a digest computed here (the mechanism every module implements) and returns the
token's r||s as DER; RSA uses CKM_SHA{256,384,512}_RSA_PKCS; Ed25519 uses CKM_EDDSA (PKCS#11 v3.0).

Process-wide state, because PKCS#11 keeps it per application, not per session:

- Threads. A module learns at C_Initialize whether the application calls it from several threads at once
  (PKCS#11 v2.40 base specification section 5.4, CK_C_INITIALIZE_ARGS): CKF_OS_LOCKING_OK lets it lock with the
  operating system's primitives, while C_Initialize(NULL_PTR) tells it that no two calls ever overlap, and SoftHSM2
  then turns its own mutexes off. python-pkcs11 0.10 only ever calls C_Initialize(NULL_PTR), offers no way to pass
  flags, and releases the GIL during each call. So the first store of a process on a module finalises it and
  initialises it again through the module's own C_GetFunctionList with CKF_OS_LOCKING_OK
  (`_initialize_for_threads`), before any session is open. Calls then run concurrently: a key generation (an
  RSA-3072 key pair takes seconds) runs in a session of its own, in a thread of its own, while the signing workers
  keep signing in the shared session; python-pkcs11's per-session lock keeps the C_SignInit/C_Sign pairs of one
  session apart. A module that refuses the flag (CKR_CANT_LOCK) is initialised as before and every call into it
  goes through one lock per module: correct, but a generation then pauses signing, and a warning says so.
- The event loop never calls into the module. `Pkcs11KeyHandle.sign` is a coroutine that runs C_SignInit/C_Sign in
  the module's own worker thread (`_Module.calls`, a `_Worker`) and the loop goes on serving while the token works:
  an HSM on the network or a busy token takes milliseconds per signature, and every token, OCSP response and
  time-stamp signs through it. The module lock, where there is one, is taken in that worker,
  never on the loop. Finding, adopting and destroying keys go through
  the same executor; a key generation runs in a thread of its own (seconds for RSA-3072) so it never holds a
  signing worker. Only the login at construction and the logout at `close()` (start and shutdown) call the module
  from the caller's thread.
- The login state belongs to the application, not to a session (PKCS#11 v2.40, C_Login and C_Logout): after
  C_Login every session of the application is in a user state, a second C_Login fails with
  CKR_USER_ALREADY_LOGGED_IN, and C_Logout on any session logs all of them out. So every store on the same token
  shares one logged-in read/write session (`_TokenLogin`), counted by reference; the last `close()` logs out. A
  store given a different PIN than the one the token accepted is refused, as the token itself would refuse it.
  Sessions opened while logged in (the generation sessions) are in the user state without a C_Login of their own.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import ctypes
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11.util.ec import encode_named_curve_parameters
from sqlalchemy.ext.asyncio import AsyncSession

from keys.errors import BackendError, KeyNotFound, UnsupportedAlgorithm
from keys.interfaces import HashName, KeyHandle, KeyType
from keys.models import StoredKey
from keys.software import key_type_of, new_key_id
from storage.base import utcnow

if TYPE_CHECKING:  # what pkcs11.lib() returns (python-pkcs11's own spelling of its type)
    from pkcs11 import _pkcs11

_CURVES: dict[KeyType, tuple[str, ec.EllipticCurve, int]] = {
    "EC-P256": ("secp256r1", ec.SECP256R1(), 32),
    "EC-P384": ("secp384r1", ec.SECP384R1(), 48),
}
_RSA_MECH = {"sha256": Mechanism.SHA256_RSA_PKCS, "sha384": Mechanism.SHA384_RSA_PKCS,
             "sha512": Mechanism.SHA512_RSA_PKCS}
# A signing key signs and nothing else: no decrypt, unwrap or derive (the defaults of python-pkcs11 allow them).
_CAPABILITIES = MechanismFlag.SIGN | MechanismFlag.VERIFY
_PRIVATE_TEMPLATE: dict[Attribute, Any] = {
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.PRIVATE: True,
    Attribute.TOKEN: True,
}
_ED25519_PARAMS = bytes.fromhex("06032b6570")  # OID 1.3.101.112 (RFC 8410), as CKA_EC_PARAMS
# What the token must offer (C_GetMechanismList) to generate and sign with each key type. A token may store a key
# it cannot sign with (SoftHSM2 without CKM_EDDSA does), so both are checked before a key is made.
_REQUIRED_MECHANISMS: dict[KeyType, tuple[Mechanism, ...]] = {
    "EC-P256": (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
    "EC-P384": (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
    "RSA-2048": (Mechanism.RSA_PKCS_KEY_PAIR_GEN, *_RSA_MECH.values()),
    "RSA-3072": (Mechanism.RSA_PKCS_KEY_PAIR_GEN, *_RSA_MECH.values()),
    "Ed25519": (Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA),
}
_PIN_ERRORS = (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange)

log = logging.getLogger("acar.keys.pkcs11")

_REGISTRY_LOCK = threading.Lock()  # guards _MODULES and _LOGINS (never held while signing)
_T = TypeVar("_T")
_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]  # a call's future, its result, its exception


class _Worker:
    """The one thread that calls a PKCS#11 module for every event loop of the process, in the order the calls came.

    One thread, because every signature goes through the one shared login session, whose operations python-pkcs11
    serialises with a per-session lock: more threads only contend for it (bench_token_hsm.py, loaded machine:
    pkcs11/software 0.66 with one worker thread, 0.43 to 0.62 with four); signing in parallel would take a pool of
    sessions, each with a thread of its own.

    Cheaper than a one-thread executor when signatures come faster than the token makes them (a busy token
    endpoint): a call is a deque entry and, only when the thread is waiting, one wake-up; a result is set on its
    future from the caller's loop, and a loop is woken once for all the results that arrived before it ran them
    (`_settle`), not once per call (each executor call costs a concurrent Future, a thread wake-up and a loop
    wake-up: about 50 us of CPU on this machine's cores, as much as SoftHSM2's own ECDSA signature). Each result is
    handed over as soon as its call returns, so a slow token delays no caller behind a batch.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._calls: collections.deque[_Call] = collections.deque()
        self._results: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, call: Callable[..., _T], args: tuple[Any, ...]) -> asyncio.Future[_T]:
        """Queue `call(*args)`; its result (or exception) arrives on the returned future of the running loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()
                atexit.register(self._stop)
            self._calls.append((loop, future, call, args))
            self._work.notify()
        return future

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._calls and not self._stopping:
                    self._work.wait()
                if not self._calls:
                    return
                loop, future, call, args = self._calls.popleft()
            if future.cancelled():  # the caller went away before its turn (harmless if it goes away meanwhile)
                continue
            try:
                outcome: _Outcome = (future, call(*args), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's future, raised there
                outcome = (future, None, exc)
            with self._lock:
                waiting = self._results.setdefault(loop, [])
                waiting.append(outcome)
                first = len(waiting) == 1
            if first:  # the loop has not been told of any result yet: tell it once for all that arrive meanwhile
                try:
                    loop.call_soon_threadsafe(self._settle, loop)
                except RuntimeError:  # the loop was closed: nobody awaits its results any more
                    with self._lock:
                        self._results.pop(loop, None)

    def _settle(self, loop: asyncio.AbstractEventLoop) -> None:
        """On `loop`: set every result that arrived for it."""
        with self._lock:
            arrived = self._results.pop(loop, [])
        for future, result, error in arrived:
            if future.cancelled():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def _stop(self) -> None:
        """At interpreter exit: the calls queued before are made, then the thread ends (so no call into the module
        is under way while the interpreter tears it down)."""
        with self._lock:
            self._stopping = True
            self._work.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)


# --- initialising a module for threads: the PKCS#11 C API (pkcs11t.h, pkcs11f.h) through ctypes ------------------

CKR_OK: Final = 0x000
CKR_CANT_LOCK: Final = 0x00A
CKF_OS_LOCKING_OK: Final = 0x002
_CK_RV = ctypes.c_ulong
_CK_INIT_FUNCTION = ctypes.CFUNCTYPE(_CK_RV, ctypes.c_void_p)  # C_Initialize(pInitArgs), C_Finalize(pReserved)


class _CkVersion(ctypes.Structure):
    _fields_ = (("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte))


class _CkFunctionListHead(ctypes.Structure):
    """The first members of CK_FUNCTION_LIST (the same in v2.x and v3.x): the version, then C_Initialize and
    C_Finalize; the rest is not read."""

    _fields_ = (("version", _CkVersion), ("C_Initialize", _CK_INIT_FUNCTION), ("C_Finalize", _CK_INIT_FUNCTION))


class _CkInitializeArgs(ctypes.Structure):
    """CK_C_INITIALIZE_ARGS: no mutex callbacks and CKF_OS_LOCKING_OK, "the library can use the native
    operating system threading model for locking" (PKCS#11 v2.40 section 5.4)."""

    _fields_ = (("CreateMutex", ctypes.c_void_p), ("DestroyMutex", ctypes.c_void_p),
                ("LockMutex", ctypes.c_void_p), ("UnlockMutex", ctypes.c_void_p),
                ("flags", ctypes.c_ulong), ("pReserved", ctypes.c_void_p))


def _initialize_for_threads(module_path: str) -> bool:
    """Finalise the module python-pkcs11 initialised with C_Initialize(NULL_PTR) and initialise it again with
    CKF_OS_LOCKING_OK; True if the module accepted, False if it only works single-threaded (then it is
    initialised as before). Called once, right after the module is loaded: no session of this process is open
    yet (Açar's key store is the module's only user in its process, so C_Finalize loses nothing)."""
    try:  # RTLD_NOLOAD: the module instance python-pkcs11 loaded, never a second copy with state of its own
        library = ctypes.CDLL(module_path, mode=os.RTLD_NOLOAD)
        get_function_list = library.C_GetFunctionList
    except (OSError, AttributeError) as exc:
        return _single_threaded(module_path, str(exc))
    get_function_list.argtypes = (ctypes.POINTER(ctypes.POINTER(_CkFunctionListHead)),)
    get_function_list.restype = _CK_RV
    functions = ctypes.POINTER(_CkFunctionListHead)()
    if get_function_list(ctypes.byref(functions)) != CKR_OK or not functions:
        return _single_threaded(module_path, "C_GetFunctionList failed")
    head = functions.contents
    if head.C_Finalize(None) != CKR_OK:  # left as python-pkcs11 initialised it
        return _single_threaded(module_path, "C_Finalize failed")
    arguments = _CkInitializeArgs(flags=CKF_OS_LOCKING_OK)
    result = head.C_Initialize(ctypes.addressof(arguments))
    if result == CKR_OK:
        return True
    refused = f"C_Initialize with CKF_OS_LOCKING_OK returned 0x{result:x}" + (
        " (CKR_CANT_LOCK)" if result == CKR_CANT_LOCK else "")
    result = head.C_Initialize(None)
    if result != CKR_OK:
        raise BackendError(f"ACAR_PKCS11_MODULE: cannot initialise the PKCS#11 module {module_path} again "
                           f"(C_Initialize returned 0x{result:x})")
    return _single_threaded(module_path, refused)


def _single_threaded(module_path: str, reason: str) -> bool:
    log.warning("pkcs11.single_threaded", extra={
        "pkcs11_module": module_path, "reason": reason,
        "consequence": "calls into the module are serialised: a key generation pauses signing"})
    return False


@dataclass(frozen=True, slots=True)
class _Module:
    """A PKCS#11 module loaded in this process, and what a call into it must hold (see module docstring)."""

    lib: _pkcs11.lib
    threaded: bool  # initialised with CKF_OS_LOCKING_OK: calls from several threads may overlap
    lock: AbstractContextManager[Any]  # a real lock only for a single-threaded module
    calls: _Worker  # the thread that calls the module for the event loops (never a loop itself)

    async def run(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run `call(*args)` in this module's worker thread, holding the module lock there, and await it."""
        return await self.calls.submit(self._locked, (call, args))

    def _locked(self, call: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        with self.lock:
            return call(*args)


_MODULES: dict[str, _Module] = {}  # module path as configured -> the module; guarded by _REGISTRY_LOCK


def _load_module(module_path: str) -> _Module:
    """The module, loaded and initialised once per process. Caller holds _REGISTRY_LOCK."""
    module = _MODULES.get(module_path)
    if module is not None:
        return module
    try:
        lib = pkcs11.lib(module_path)  # keyed by the path as configured, like python-pkcs11's own cache
    except pkcs11.PKCS11Error as exc:  # not loadable, not a PKCS#11 module, or C_Initialize failed
        raise BackendError(
            f"ACAR_PKCS11_MODULE: cannot use the PKCS#11 module {module_path}: {str(exc) or type(exc).__name__}"
        ) from None
    threaded = _initialize_for_threads(module_path)
    lock: AbstractContextManager[Any] = contextlib.nullcontext() if threaded else threading.Lock()
    calls = _Worker("acar-pkcs11")
    module = _MODULES[module_path] = _Module(lib, threaded, lock, calls)
    return module


class _TokenLogin:
    """The one logged-in R/W session of this process on one token, shared by every store using it."""

    __slots__ = ("key", "mechanisms", "module", "pin_digest", "session", "token", "users")

    def __init__(self, key: tuple[str, str], module: _Module, token: pkcs11.Token, session: pkcs11.Session,
                 pin_digest: bytes) -> None:
        self.key = key
        self.module = module
        self.token = token
        self.session = session
        self.pin_digest = pin_digest
        with module.lock:
            self.mechanisms = frozenset(token.slot.get_mechanisms())
        self.users = 1


_LOGINS: dict[tuple[str, str], _TokenLogin] = {}  # (module path, token label) -> login; guarded by _REGISTRY_LOCK


def _pin_digest(module_path: str, token_label: str, pin: str) -> bytes:
    return hashlib.sha256(f"acar-pkcs11-pin\0{module_path}\0{token_label}\0{pin}".encode()).digest()


def _login(module_path: str, token_label: str, pin: str) -> _TokenLogin:
    """Log in to the token, or join this process's login; errors name the setting. Caller holds _REGISTRY_LOCK."""
    if not module_path:
        raise BackendError("ACAR_PKCS11_MODULE is not set (the path of the PKCS#11 module, e.g. libsofthsm2.so)")
    if not token_label:
        raise BackendError("ACAR_PKCS11_TOKEN_LABEL is not set (the label of the token holding Açar's keys)")
    if not pin:
        raise BackendError("ACAR_PKCS11_PIN is not set (the user PIN of the token)")
    digest = _pin_digest(module_path, token_label, pin)
    shared = _LOGINS.get((module_path, token_label))
    if shared is not None:
        if not hmac.compare_digest(shared.pin_digest, digest):  # C_Login cannot check it: the user is logged in
            raise BackendError(f"ACAR_PKCS11_PIN: wrong PIN for token {token_label!r} "
                               "(not the PIN this process logged in with)")
        shared.users += 1
        return shared
    module = _load_module(module_path)
    with module.lock:
        token = _find_token(module.lib, module_path, token_label)
        session = _open_session(token, pin)
    login = _LOGINS[(module_path, token_label)] = _TokenLogin(
        (module_path, token_label), module, token, session, digest)
    return login


def _find_token(lib: _pkcs11.lib, module_path: str, token_label: str) -> pkcs11.Token:
    try:
        return lib.get_token(token_label=token_label)
    except pkcs11.NoSuchToken:
        raise BackendError(f"ACAR_PKCS11_TOKEN_LABEL: no token labelled {token_label!r} in {module_path}") from None
    except pkcs11.MultipleTokensReturned:
        raise BackendError(f"ACAR_PKCS11_TOKEN_LABEL: more than one token is labelled {token_label!r}") from None
    except pkcs11.PKCS11Error as exc:
        raise BackendError(f"ACAR_PKCS11_TOKEN_LABEL: cannot list the tokens: {type(exc).__name__}") from None


def _open_session(token: pkcs11.Token, pin: str) -> pkcs11.Session:
    """Open a R/W session and log the user in (C_Login)."""
    try:
        return token.open(user_pin=pin, rw=True)
    except _PIN_ERRORS:
        raise BackendError(f"ACAR_PKCS11_PIN: the token {token.label!r} refused the PIN") from None
    except (pkcs11.PinLocked, pkcs11.PinExpired) as exc:
        raise BackendError(f"ACAR_PKCS11_PIN: the user PIN of token {token.label!r} is unusable "
                           f"({type(exc).__name__}); its security officer must reset it") from None
    except pkcs11.UserAlreadyLoggedIn:
        raise BackendError(f"PKCS#11 token {token.label!r} is already logged in by other code of this process"
                           ) from None
    except pkcs11.PKCS11Error as exc:
        raise BackendError(f"PKCS#11 token {token.label!r} unusable: {type(exc).__name__}") from None


def _der_octet_string_payload(value: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the encoded point (PKCS#11 v2.40 section 2.3.3)."""
    if not value or value[0] != 0x04:
        return value
    length = value[1]
    offset = 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(value[2:2 + n], "big")
        offset = 2 + n
    payload = value[offset:offset + length]
    return payload if len(payload) == length and offset + length == len(value) else value


def _public_from_token(public: pkcs11.Object, key_type: KeyType) -> PublicKeyTypes:
    if key_type in _CURVES:
        point = _der_octet_string_payload(bytes(public[Attribute.EC_POINT]))
        return ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[key_type][1], point)
    if key_type.startswith("RSA"):
        n = int.from_bytes(bytes(public[Attribute.MODULUS]), "big")
        e = int.from_bytes(bytes(public[Attribute.PUBLIC_EXPONENT]), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if key_type == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(
            _der_octet_string_payload(bytes(public[Attribute.EC_POINT])))
    raise UnsupportedAlgorithm(f"unknown key type {key_type}")


def _key_type_on_token(private: pkcs11.Object, public: pkcs11.Object) -> KeyType:
    """Name the type of an existing key pair, or refuse it (P-521, RSA-4096, ... are not supported)."""
    p11_type = private[Attribute.KEY_TYPE]
    if p11_type == P11KeyType.RSA:
        bits = len(bytes(public[Attribute.MODULUS]).lstrip(b"\0")) * 8
        if bits in (2048, 3072):
            return "RSA-2048" if bits == 2048 else "RSA-3072"
    elif p11_type == P11KeyType.EC:
        params = bytes(public[Attribute.EC_PARAMS])
        for key_type, (curve_name, _, _) in _CURVES.items():
            if params == encode_named_curve_parameters(curve_name):
                return key_type
    elif p11_type == P11KeyType.EC_EDWARDS and bytes(public[Attribute.EC_PARAMS]) == _ED25519_PARAMS:
        return "Ed25519"
    raise UnsupportedAlgorithm("only EC P-256/P-384, RSA 2048/3072 and Ed25519 keys are supported")


def _spki(public: PublicKeyTypes) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class Pkcs11KeyHandle:
    """A private key object on the token: signs through the token, shows its public key, exports nothing."""

    __slots__ = ("_key", "_key_id", "_key_type", "_module", "_public")

    def __init__(self, key_id: str, key_type: KeyType, key: pkcs11.SignMixin, public: PublicKeyTypes,
                 module: _Module) -> None:
        self._key_id = key_id
        self._key_type = key_type
        self._key = key  # an object of the store's shared login session
        self._public = public
        self._module = module  # its workers call the token; its lock is no lock when the module locks itself

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def key_type(self) -> KeyType:
        return self._key_type

    def public_key(self) -> PublicKeyTypes:
        return self._public

    async def sign(self, data: bytes, hash_name: HashName = "sha256") -> bytes:
        """Sign in a worker thread of the module (see module docstring): the event loop serves meanwhile."""
        return await self._module.run(self._sign_on_token, data, hash_name)

    def _sign_on_token(self, data: bytes, hash_name: HashName) -> bytes:
        """The C_SignInit/C_Sign pair; runs in a worker thread holding the module lock, never on the loop."""
        try:
            if self._key_type in _CURVES:
                size = _CURVES[self._key_type][2]
                digest = hashlib.new(hash_name, data).digest()
                raw = self._key.sign(digest, mechanism=Mechanism.ECDSA)
                return encode_dss_signature(int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big"))
            if self._key_type.startswith("RSA"):
                return bytes(self._key.sign(data, mechanism=_RSA_MECH[hash_name]))
            return bytes(self._key.sign(data, mechanism=Mechanism.EDDSA))
        except pkcs11.MechanismInvalid:
            raise UnsupportedAlgorithm(f"the token cannot sign with key {self._key_id} ({hash_name})") from None
        except pkcs11.PKCS11Error as exc:
            raise BackendError(f"the token refused to sign with key {self._key_id}: {type(exc).__name__}") from None

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a key handle cannot be pickled or copied: the private key stays on the token")

    def __repr__(self) -> str:
        return f"Pkcs11KeyHandle(key_id={self._key_id!r}, key_type={self._key_type!r})"


class Pkcs11KeyStore:
    """Key store on a PKCS#11 token; stores on one token share its login session (see module docstring)."""

    backend = "pkcs11"

    def __init__(self, *, module_path: str, token_label: str, pin: str) -> None:
        with _REGISTRY_LOCK:
            self._login: _TokenLogin | None = _login(module_path, token_label, pin)
        self._cache: dict[str, Pkcs11KeyHandle] = {}
        self._cache_lock = threading.Lock()

    def _logged_in(self) -> _TokenLogin:
        if self._login is None:
            raise BackendError("the PKCS#11 key store has been closed")
        return self._login

    @property
    def _session(self) -> pkcs11.Session:
        return self._logged_in().session

    @property
    def _module(self) -> _Module:
        return self._logged_in().module

    @property
    def threaded(self) -> bool:
        """True when the module runs calls from several threads at once (it accepted CKF_OS_LOCKING_OK)."""
        return self._logged_in().module.threaded

    def close(self) -> None:
        """Forget the cached handles; the last store of this process on the token logs out."""
        with self._cache_lock:
            self._cache.clear()
        with _REGISTRY_LOCK:
            login, self._login = self._login, None
            if login is None:
                return
            login.users -= 1
            if login.users == 0:
                del _LOGINS[login.key]
                try:
                    with login.module.lock:
                        login.session.close()  # C_Logout, then C_CloseSession
                except pkcs11.PKCS11Error as exc:
                    raise BackendError(f"closing the PKCS#11 session failed: {type(exc).__name__}") from None

    # --- token operations, in a worker thread: through `_Module.run` (which holds the module's lock, none for a
    # threaded module) or, for a generation, a thread of its own -------------------------------------------------

    def _generate_on_token(self, key_type: KeyType, key_id: str, label: str) -> PublicKeyTypes:
        """Generate the key pair in a session of its own (signing goes on in the shared one meanwhile)."""
        common: dict[str, Any] = {"id": key_id.encode(), "label": label, "store": True,
                                  "capabilities": _CAPABILITIES, "private_template": dict(_PRIVATE_TEMPLATE)}
        login = self._logged_in()
        with login.module.lock, login.token.open(rw=True) as session:  # in the user state: the token is logged in
            if key_type in _CURVES:
                params = session.create_domain_parameters(
                    P11KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[key_type][0])},
                    local=True)
                public_obj, private = params.generate_keypair(**common)
            elif key_type in ("RSA-2048", "RSA-3072"):
                public_obj, private = session.generate_keypair(P11KeyType.RSA, int(key_type[4:]), **common)
            elif key_type == "Ed25519":
                params = session.create_domain_parameters(
                    P11KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: _ED25519_PARAMS}, local=True)
                public_obj, private = params.generate_keypair(mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, **common)
            else:
                raise UnsupportedAlgorithm(f"unknown key type {key_type}")
            if not isinstance(private, pkcs11.SignMixin):
                raise BackendError(f"the token made a {key_type} key that cannot sign")
            return _public_from_token(public_obj, key_type)

    def _destroy_on_token(self, key_id: str) -> None:
        objects = [obj for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)
                   for obj in self._session.get_objects({Attribute.CLASS: cls, Attribute.ID: key_id.encode()})]
        for obj in objects:
            obj.destroy()

    def _find_private(self, key_id: str) -> pkcs11.SignMixin:
        key = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id.encode())
        if not isinstance(key, pkcs11.SignMixin):
            raise BackendError(f"key {key_id} on the token cannot sign")
        return key

    def _adopt_on_token(self, token_label: str) -> tuple[str, KeyType, pkcs11.Object, PublicKeyTypes]:
        """Find the pair labelled `token_label`; give it a key id as CKA_ID unless it has a usable one."""
        private = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=token_label)
        public_obj = self._session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=token_label)
        key_type = _key_type_on_token(private, public_obj)
        public = _public_from_token(public_obj, key_type)
        raw_id = bytes(private[Attribute.ID])
        key_id = raw_id.decode("ascii") if raw_id.isascii() and raw_id.decode("ascii").isprintable() else ""
        if not key_id or len(key_id) > 64:
            key_id = new_key_id()
            private[Attribute.ID] = key_id.encode()
            public_obj[Attribute.ID] = key_id.encode()
        return key_id, key_type, private, public

    def _remember(self, handle: Pkcs11KeyHandle) -> Pkcs11KeyHandle:
        with self._cache_lock:
            return self._cache.setdefault(handle.key_id, handle)

    # --- the KeyStore protocol ---------------------------------------------------------------------------

    async def generate(self, session: AsyncSession, key_type: KeyType, *, purpose: str, label: str) -> KeyHandle:
        if key_type not in _REQUIRED_MECHANISMS:
            raise UnsupportedAlgorithm(f"unknown key type {key_type}")
        missing = [m.name for m in _REQUIRED_MECHANISMS[key_type] if m not in self._logged_in().mechanisms]
        if missing:
            raise UnsupportedAlgorithm(f"the token cannot generate {key_type} keys: it does not offer "
                                       + ", ".join(f"CKM_{name}" for name in missing))
        key_id = new_key_id()
        try:  # RSA key generation on a token takes up to seconds: the event loop keeps serving (and signing)
            public = await asyncio.to_thread(self._generate_on_token, key_type, key_id, label)
            private = await self._module.run(self._find_private, key_id)  # the same key, in the shared session
        except (pkcs11.MechanismInvalid, pkcs11.DomainParamsInvalid, pkcs11.FunctionNotSupported) as exc:
            raise UnsupportedAlgorithm(f"the token cannot generate {key_type} keys ({type(exc).__name__})") from None
        except pkcs11.PKCS11Error as exc:
            raise BackendError(f"the token could not generate a {key_type} key: {type(exc).__name__}") from None
        handle = Pkcs11KeyHandle(key_id, key_type, private, public, self._module)
        session.add(StoredKey(id=key_id, backend=self.backend, key_type=key_type, purpose=purpose, label=label,
                              public_key_der=_spki(public)))
        await session.flush()
        return self._remember(handle)

    async def adopt(self, session: AsyncSession, *, token_label: str, purpose: str) -> KeyHandle:
        """Record an existing key pair on the token (found by CKA_LABEL) so Açar can sign with it.

        The key id is the pair's CKA_ID when that is a printable ASCII string; otherwise a new key id is written
        to CKA_ID of both objects, so `load` finds the pair the same way as a key Açar generated.
        """
        try:
            key_id, key_type, private, public = await self._module.run(self._adopt_on_token, token_label)
        except pkcs11.NoSuchKey:
            raise KeyNotFound(f"no key pair labelled {token_label!r} on the token") from None
        except pkcs11.MultipleObjectsReturned:
            raise BackendError(f"more than one key pair is labelled {token_label!r} on the token") from None
        except pkcs11.PKCS11Error as exc:
            raise BackendError(f"the token refused access to {token_label!r}: {type(exc).__name__}") from None
        if key_type_of(public) != key_type or not isinstance(private, pkcs11.SignMixin):
            raise UnsupportedAlgorithm(f"the key pair labelled {token_label!r} cannot sign as {key_type}")
        existing = await session.get(StoredKey, key_id)
        if existing is not None:
            if existing.backend != self.backend or existing.destroyed_at is not None:
                raise BackendError(f"key id {key_id} of {token_label!r} is already used by another stored key")
            return await self.load(session, key_id)
        handle = Pkcs11KeyHandle(key_id, key_type, private, public, self._module)
        session.add(StoredKey(id=key_id, backend=self.backend, key_type=key_type, purpose=purpose,
                              label=token_label, public_key_der=_spki(public)))
        await session.flush()
        return self._remember(handle)

    async def load(self, session: AsyncSession, key_id: str) -> KeyHandle:
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        row = await session.get(StoredKey, key_id)
        if row is None or row.destroyed_at is not None or row.backend != self.backend:
            raise KeyNotFound(f"no usable PKCS#11 key {key_id}")
        try:
            private = await self._module.run(self._find_private, key_id)
        except pkcs11.NoSuchKey:
            raise KeyNotFound(f"key {key_id} is recorded but not on the token") from None
        except pkcs11.PKCS11Error as exc:
            raise BackendError(f"the token refused access to key {key_id}: {type(exc).__name__}") from None
        public = serialization.load_der_public_key(row.public_key_der)
        handle = Pkcs11KeyHandle(key_id, key_type_of(public), private, public, self._module)
        return self._remember(handle)

    async def destroy(self, session: AsyncSession, key_id: str) -> None:
        row = await session.get(StoredKey, key_id)
        if row is None or row.backend != self.backend:
            raise KeyNotFound(f"no PKCS#11 key {key_id}")
        try:
            await self._module.run(self._destroy_on_token, key_id)
        except pkcs11.PKCS11Error as exc:
            raise BackendError(f"the token could not destroy key {key_id}: {type(exc).__name__}") from None
        with self._cache_lock:
            self._cache.pop(key_id, None)
        if row.destroyed_at is None:
            row.destroyed_at = utcnow()
        await session.flush()
