"""Web eID token verification on one core with a cached OCSP response (issue 15 target: >= 500 verifications/s
per core), beside the bare `cryptography` ECDSA verify rate of the same curve measured in the same run.

The generated ID-card PKI of tests/idcard_pki.py (root, issuing CA, a real `openssl ocsp` responder on loopback)
issues --cards card certificates on P-384 (ES384, the curve of current national ID cards) and on P-256 (ES256). Each
card logs in once (path validation and a real OCSP request: the verdict is cached until the response's nextUpdate),
then the responder is STOPPED, so every measured verification is answered from the cache or fails. A verification
is what the login endpoint does with the browser's JSON: `parse_token` (field checks, strict base64) and
`WebEidVerifier.verify` (the certificate parsed, the algorithm fitted to its key, raw r||s converted to DER, ECDSA
over SHA-384(origin) || SHA-384(nonce), then the certificate verifier's cached verdict), awaited in a running
event loop. Every token has its own nonce (signed beforehand, as the cards would). The reference is
`EllipticCurvePublicKey.verify` of a DER signature over 96 bytes: the floor the token's own cryptography sets.

Median of --runs runs of --seconds each, alternating the two sides.

Usage: .venv/bin/python bench/bench_webeid.py [--runs 7] [--seconds 1.0] [--cards 8] [--tokens 2000]
(pins itself to one core)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.idcard_pki

from _timing import async_rate, rate  # noqa: E402 - bench/ is first on sys.path

from idp.core.certificates import CertificateVerifier  # noqa: E402 - after the sys.path entry
from idp.core.webeid import WebEidVerifier, new_nonce, parse_token  # noqa: E402
from tests.idcard_pki import idcard_pki  # noqa: E402

ORIGIN = "https://login.acar.test"


def bare_verify(public: ec.EllipticCurvePublicKey, signature: bytes, data: bytes,
                digest: hashes.HashAlgorithm) -> Callable[[], None]:
    """The reference: one `cryptography` ECDSA verification of a DER signature."""

    def verify() -> None:
        public.verify(signature, data, ec.ECDSA(digest))

    return verify


def cycle(items: list[Any]) -> Callable[[], Any]:
    index = -1

    def step() -> Any:
        nonlocal index
        index = (index + 1) % len(items)
        return items[index]

    return step


async def measure(args: argparse.Namespace) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory() as directory, idcard_pki(Path(directory) / "pki") as pki:
        certificates = CertificateVerifier(pki.policy(), clock=lambda: dt.datetime.now(dt.UTC))
        verifier = WebEidVerifier(certificates, origin=ORIGIN)
        results: dict[str, tuple[float, float]] = {}
        try:
            sides: dict[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
                "ES384 (P-384)": (ec.SECP384R1(), hashes.SHA384()),
                "ES256 (P-256)": (ec.SECP256R1(), hashes.SHA256()),
            }
            prepared: dict[str, tuple[list[tuple[dict[str, Any], str]], Callable[[], None]]] = {}
            for name, (curve, digest) in sides.items():
                cards = [pki.card(f"{i:07d}", curve=curve) for i in range(args.cards)]
                for card in cards:  # the first login of each card: path validation and a real OCSP request
                    nonce = new_nonce()
                    await verifier.verify(parse_token(card.token(origin=ORIGIN, nonce=nonce)), nonce=nonce)
                tokens = []
                for i in range(args.tokens):
                    nonce = new_nonce()
                    tokens.append((cards[i % len(cards)].token(origin=ORIGIN, nonce=nonce), nonce))
                key = cards[0].key
                if not isinstance(key, ec.EllipticCurvePrivateKey):
                    raise SystemExit("an EC card was expected")
                public = key.public_key()
                data = os.urandom(2 * digest.digest_size)
                der_signature = key.sign(data, ec.ECDSA(digest))

                prepared[name] = (tokens, bare_verify(public, der_signature, data, digest))
            validations = certificates.validations
            pki.responder.stop()  # from here on, only the cache can answer

            for name, (tokens, bare) in prepared.items():
                next_token = cycle(tokens)

                async def verify_one(next_token: Callable[[], Any] = next_token) -> None:
                    token, nonce = next_token()
                    await verifier.verify(parse_token(token), nonce=nonce)

                await async_rate(verify_one, 0.3)  # warm-up
                rate(bare, 0.3)
                webeid_runs, bare_runs = [], []
                for _ in range(args.runs):
                    webeid_runs.append(await async_rate(verify_one, args.seconds))
                    bare_runs.append(rate(bare, args.seconds))
                results[name] = (statistics.median(webeid_runs), statistics.median(bare_runs))
                print(f"{name}: Web eID token verification {results[name][0]:8.0f}/s "
                      f"(runs {min(webeid_runs):.0f}-{max(webeid_runs):.0f}); bare cryptography ECDSA verify "
                      f"{results[name][1]:8.0f}/s; ratio {results[name][0] / results[name][1]:.2f}")
            if certificates.validations != validations:
                raise SystemExit("a measured verification was not answered from the cache")
        finally:
            await certificates.aclose()
        es384 = results["ES384 (P-384)"][0]
        print(f"target >= 500 verifications/s per core (ES384, cached OCSP): {'met' if es384 >= 500 else 'NOT met'}"
              f" ({es384:.0f}/s, one core, median of {args.runs} runs of {args.seconds:g} s)")
        print(json.dumps({"bench": "webeid", "curves": {  # the last line: read by bench/run_all.py
            name.split()[0]: {"per_s": round(webeid, 1), "bare_verify_per_s": round(bare, 1)}
            for name, (webeid, bare) in results.items()}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--cards", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=2000)
    asyncio.run(measure(ap.parse_args()))


if __name__ == "__main__":
    main()
