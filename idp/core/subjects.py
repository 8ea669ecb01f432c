"""Subject identifiers (OIDC Core 8): pairwise per sector by default, public only where registered.

Pairwise: sub = BASE64URL(SHA-256(sector_identifier || 0x00 || local person id || 0x00 || salt)), the
calculation OIDC Core 8.1 suggests. Agencies of different sectors get unrelated values for one person and
cannot correlate citizens without the national-identifier claim, which needs the citizen's consent.
"""

from __future__ import annotations

import hashlib

from idp.core.interfaces import Client
from keys.jose import b64url


class SubjectIdentifiers:
    def __init__(self, salt: bytes) -> None:
        if len(salt) < 16:
            raise ValueError("the pairwise salt must be at least 16 bytes")
        self._salt = salt

    def for_client(self, client: Client, person_id: str) -> str:
        if client.subject_type == "public":
            return person_id
        material = b"\x00".join((client.sector_identifier.encode(), person_id.encode(), self._salt))
        return b64url(hashlib.sha256(material).digest())
