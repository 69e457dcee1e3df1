"""Small HTTP helpers shared by the dispatcher (and, later, the gateway status server).

- :func:`error_body`: the one JSON error shape, ``{"error": slug, "detail": ..., **extra}``.
- :func:`check_bearer`: constant-time ``Authorization: Bearer <token>`` check.
- :func:`read_token`: read a bearer token from a file, rejecting short ones.
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any

MIN_TOKEN_LEN = (
    8  # every bearer token, dispatcher and gateway alike; docs/configuration.md says why
)


def error_body(slug: str, detail: str, **extra: Any) -> bytes:
    """The JSON body of an error answer (compact, UTF-8)."""
    return json.dumps({"error": slug, "detail": detail, **extra}, separators=(",", ":")).encode()


def check_bearer(header_value: bytes | str | None, token: str) -> bool:
    """True when ``header_value`` is ``Bearer <token>``.

    The scheme is case-insensitive (RFC 9110); the credential is compared in
    constant time. An empty ``token`` never matches.
    """
    if not token or not header_value:
        return False
    raw = header_value.encode("latin-1") if isinstance(header_value, str) else header_value
    scheme, _, cred = raw.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(cred.strip(), token.encode())


def read_token(path: str | os.PathLike[str]) -> str:
    """The token in ``path`` (surrounding whitespace stripped).

    ValueError naming the file when it cannot be read or the token is shorter
    than ``MIN_TOKEN_LEN`` characters, the one minimum of every token (docs/configuration.md).
    """
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"token in {path} is not UTF-8 text") from None
    if len(token) < MIN_TOKEN_LEN:
        raise ValueError(f"token in {path} is empty or shorter than {MIN_TOKEN_LEN} characters")
    return token
