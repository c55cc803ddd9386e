"""The key check of our HTTP services (the model server, the sandbox): `Authorization: Bearer <key>`, compared
in constant time so a wrong key's response time gives no hint about the right one."""

from __future__ import annotations

import hmac


def bearer_matches(authorization: str | None, key: str) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())
