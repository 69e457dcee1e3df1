"""The dashboard's static files (package data in ``dispatcher/ui/``), served under ``/ui/``.

Every file is read once, at start, into memory with its content type and an
ETag; a request names a file of that fixed set or gets 404 (no path is ever
joined from the URL, so there is nothing to traverse). Answers carry
``cache-control: no-cache`` (the browser revalidates, a matching
``If-None-Match`` gets 304) and a strict Content-Security-Policy: everything
from this origin only, no inline script or style, no eval, no framing, no
plugins. The page reaches the dispatcher only through ``fetch`` to its own
origin (``/v1/events``, ``/v1/gateways/...``, ``/v1/rebalance/...``).
"""

from __future__ import annotations

import hashlib
from importlib import resources

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
}
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class StaticFiles:
    """The files of one package directory, by name; ``get`` answers a request for one."""

    def __init__(self, package: str = "tcpdispatch.dispatcher", directory: str = "ui") -> None:
        self.files: dict[str, tuple[bytes, bytes, bytes]] = {}  # name -> (type, etag, body)
        root = resources.files(package).joinpath(directory)
        for entry in root.iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if entry.is_file() and suffix in TYPES:
                body = entry.read_bytes()
                etag = b'"%s"' % hashlib.sha256(body).hexdigest()[:20].encode()
                self.files[entry.name] = (TYPES[suffix], etag, body)

    def get(self, name: str, if_none_match: bytes = b"") -> Answer | None:
        """The answer for ``/ui/<name>`` (``""``:
        index.html), or None when there is no such file."""
        found = self.files.get(name or "index.html")
        if found is None:
            return None
        ctype, etag, body = found
        headers = [
            (b"content-type", ctype),
            (b"etag", etag),
            (b"cache-control", b"no-cache"),
            *SECURITY_HEADERS,
        ]
        if if_none_match and etag in [t.strip() for t in if_none_match.split(b",")]:
            return 304, headers, b""
        return 200, headers, body


__all__ = ["CSP", "SECURITY_HEADERS", "StaticFiles"]
