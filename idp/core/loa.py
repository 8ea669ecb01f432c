"""Levels of assurance: eIDAS-like low / substantial / high, published as configurable `acr` URIs.

OIDC Core 2 (acr) and 5.5.1.1 (essential acr); each login method declares the level it reaches and its
RFC 8176 `amr` values. A session satisfies a request when its level is at least the lowest level requested.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from idp.core.interfaces import LEVELS, Level

_RANK = {level: rank for rank, level in enumerate(LEVELS)}


def at_least(level: Level, required: Level | None) -> bool:
    return required is None or _RANK[level] >= _RANK[required]


def highest(levels: Iterable[Level]) -> Level | None:
    ranked = sorted(levels, key=_RANK.__getitem__)
    return ranked[-1] if ranked else None


@dataclass(frozen=True, slots=True)
class AcrPolicy:
    """The configured acr URI of each level (ACAR_ACR_LOW, ACAR_ACR_SUBSTANTIAL, ACAR_ACR_HIGH)."""

    uris: Mapping[str, str]

    def uri(self, level: Level) -> str:
        return self.uris[level]

    @property
    def supported(self) -> list[str]:
        return [self.uris[level] for level in LEVELS]

    def level_of(self, value: str) -> Level | None:
        """The level an acr value names: its URI, or the bare level name."""
        for level in LEVELS:
            if value in (self.uris[level], level):
                return level
        return None

    def required_level(self, values: Iterable[str]) -> Level | None:
        """The least level that satisfies a list of requested acr values (unknown values are ignored, as
        OIDC Core 3.1.2.1 makes acr_values voluntary); None when nothing known was asked for."""
        known: list[Level] = [lvl for lvl in (self.level_of(v) for v in values) if lvl is not None]
        if not known:
            return None
        return min(known, key=_RANK.__getitem__)


@dataclass(frozen=True, slots=True)
class LoginMethod:
    """A way to log in: the level it reaches and its RFC 8176 authentication method reference values."""

    name: str
    level: Level
    amr: tuple[str, ...]


DEV_LOGIN_METHODS: Mapping[Level, LoginMethod] = {
    # Development shortcut only (ACAR_DEV_LOGIN, refused in production). amr "test" is not an RFC 8176
    # value on purpose, so no relying party can mistake a development login for a real one.
    "low": LoginMethod("dev-low", "low", ("test",)),
    "substantial": LoginMethod("dev-substantial", "substantial", ("test", "mfa")),
    "high": LoginMethod("dev-high", "high", ("test", "hwk", "mfa")),
}


CARD_LOGIN_METHODS: Mapping[str, LoginMethod] = {
    # An ID card's authentication key: a hardware-bound key (RFC 8176 "hwk") on a smart card ("sc") unlocked by
    # its PIN ("pin"), two factors ("mfa"); eIDAS-like level high.
    "webeid": LoginMethod("idcard-webeid", "high", ("hwk", "mfa", "pin", "sc")),
    "tls": LoginMethod("idcard-tls", "high", ("hwk", "mfa", "pin", "sc")),
}
