"""A throwaway SoftHSM2 token for the PKCS#11 tests, and an independent look at what the token holds.

The token lives in its own token directory under the test's temporary directory, named by its own
SOFTHSM2_CONF file; nothing touches the system's /var/lib/softhsm. SoftHSM2 reads SOFTHSM2_CONF when the module
is initialised (C_Initialize), which python-pkcs11 does once per process, so the token is made once per test
session, before anything loads the module.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, ObjectClass

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


def missing() -> str | None:
    """Why SoftHSM2 cannot be used here (softhsm2-util or its module is not installed), or None."""
    if shutil.which("softhsm2-util") is None or not SOFTHSM_MODULE.exists():
        return ("SoftHSM2 is required for the PKCS#11 tests and is not installed (softhsm2-util, "
                f"{SOFTHSM_MODULE}); install the Debian package softhsm2 or run `make test` as root")
    return None


@dataclass(frozen=True)
class SoftHsmToken:
    module: str
    label: str
    pin: str
    so_pin: str
    conf: Path

    def acar_env(self) -> dict[str, str]:
        """The settings of the pkcs11 key backend on this token, for real `acar` processes."""
        return {"ACAR_KEY_BACKEND": "pkcs11", "ACAR_PKCS11_MODULE": self.module,
                "ACAR_PKCS11_TOKEN_LABEL": self.label, "ACAR_PKCS11_PIN": self.pin, "SOFTHSM2_CONF": str(self.conf)}

    @contextlib.contextmanager
    def session(self, *, rw: bool = False) -> Iterator[pkcs11.Session]:
        """A session of its own, not logged in: private objects are visible while a key store of this process
        is logged in to the token (PKCS#11 login state is per application)."""
        with pkcs11.lib(self.module).get_token(token_label=self.label).open(rw=rw) as session:
            yield session

    def _find(self, session: pkcs11.Session, key_id: str) -> Iterator[tuple[str, pkcs11.Object]]:
        for name, cls in (("private", ObjectClass.PRIVATE_KEY), ("public", ObjectClass.PUBLIC_KEY)):
            for obj in session.get_objects({Attribute.CLASS: cls, Attribute.ID: key_id.encode()}):
                yield name, obj

    def objects(self, key_id: str) -> dict[str, dict[Attribute, Any]]:
        """The key objects with CKA_ID = key_id by class ("private", "public") and their attributes."""
        private_attrs = (Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.ALWAYS_SENSITIVE,
                         Attribute.NEVER_EXTRACTABLE, Attribute.PRIVATE, Attribute.TOKEN, Attribute.SIGN,
                         Attribute.DECRYPT, Attribute.LABEL)
        with self.session() as session:
            return {name: {attr: obj[attr] for attr in (private_attrs if name == "private" else (Attribute.LABEL,))}
                    for name, obj in self._find(session, key_id)}

    def read_private(self, key_id: str, attribute: Attribute) -> Any:
        """Ask the token for one attribute of the private key (a secret part must be refused)."""
        with self.session() as session:
            for name, obj in self._find(session, key_id):
                if name == "private":
                    return obj[attribute]
        raise LookupError(f"no private key {key_id} on the token")

    def destroy_objects(self, key_id: str) -> None:
        """Remove the key pair behind Açar's back (another tool, a token reset)."""
        with self.session(rw=True) as session:
            for _, obj in list(self._find(session, key_id)):
                obj.destroy()


def create_token(directory: Path) -> SoftHsmToken:
    """Initialise a new token `acar-test-<random>` in a token directory of its own under `directory`."""
    tokendir = directory / "tokens"
    tokendir.mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\nlog.level = ERROR\n"
                    "slots.removable = false\n")
    token = SoftHsmToken(module=str(SOFTHSM_MODULE), label=f"acar-test-{secrets.token_hex(4)}",
                         pin=secrets.token_hex(6), so_pin=secrets.token_hex(6), conf=conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", token.label,
         "--pin", token.pin, "--so-pin", token.so_pin],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True, capture_output=True, text=True, timeout=60,
    )
    return token


def session_token(directory: Path) -> Iterator[SoftHsmToken]:
    """Create the token and point SOFTHSM2_CONF of this process (and its children) at it until the end."""
    token = create_token(directory)
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(token.conf)
    try:
        yield token
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
