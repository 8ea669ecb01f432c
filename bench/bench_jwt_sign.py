"""ES256 JWT signing through the key interface vs raw `cryptography` ECDSA P-256 signing, on one core.

Issue 3 target: JwsSigner (KeyHandle.sign + JWS encoding) reaches at least 80% of raw sign speed.
Both sides sign the same kind of input: the raw side signs a precomputed JWS signing input of the same
length, so the ratio is exactly the cost of the interface and the JWT encoding. `KeyHandle.sign` and
`JwsSigner.sign` are coroutines: the interface side awaits them inside a running event loop, as a request
handler does (a software key signs inline, so the cost is the coroutine calls, no thread hop).

Usage: .venv/bin/python bench/bench_jwt_sign.py [runs] [seconds-per-run]   (pins itself to one core)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable

from _timing import async_rate, rate
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from keys.jose import JwsSigner
from keys.software import SoftwareKeyHandle


async def measure() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    key = ec.generate_private_key(ec.SECP256R1())
    handle = SoftwareKeyHandle("bench-kid-0123456789", key)
    signer = JwsSigner(handle, "ES256")
    now = int(time.time())
    claims = {"iss": "https://login.gov.az", "sub": "b6f1c2d3e4", "aud": "https://agency.gov.az", "iat": now,
              "exp": now + 600, "jti": "5pLq0vNVmU0mTL3d2xGkVg", "client_id": "agency", "scope": "openid profile"}
    token = await signer.sign(claims, typ="at+jwt")
    signing_input = token.rsplit(".", 1)[0].encode()
    algorithm = ec.ECDSA(hashes.SHA256())

    def raw() -> bytes:
        return key.sign(signing_input, algorithm)

    def through_interface() -> Awaitable[str]:
        return signer.sign(claims, typ="at+jwt")

    rate(raw, 0.5)
    await async_rate(through_interface, 0.5)  # warm up
    raw_rates, jwt_rates = [], []
    for _ in range(runs):  # interleaved so drift hits both sides alike
        raw_rates.append(rate(raw, seconds))
        jwt_rates.append(await async_rate(through_interface, seconds))
    raw_med, jwt_med = statistics.median(raw_rates), statistics.median(jwt_rates)
    print(f"runs={runs} seconds_per_run={seconds} cpu={sorted(os.sched_getaffinity(0))}")
    print(f"raw cryptography ECDSA P-256 sign     : {raw_med:10.0f} /s (median)")
    print(f"ES256 JWT via await JwsSigner.sign    : {jwt_med:10.0f} /s (median)")
    print(f"ratio interface/raw                   : {jwt_med / raw_med:10.3f}  (target >= 0.80)")


def main() -> None:
    asyncio.run(measure())


if __name__ == "__main__":
    main()
