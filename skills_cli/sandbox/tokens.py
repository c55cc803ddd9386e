"""The sandbox's key check: `Authorization: Bearer <key>` compared in constant time (no timing hints)."""

from __future__ import annotations

import hmac


def bearer_matches(authorization: str | None, key: str) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())
