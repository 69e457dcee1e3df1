"""Write a dispatcher's TOML file from a small structured description.

The one place that writes dispatcher configuration: the demo's runtime
(:mod:`tcpdispatch.cluster`), the test harness and the benchmarks all go through
:func:`dispatcher_toml`. The description is plain data (the ``[dispatcher]`` keys,
other sections by name, one mapping per ``[[gateways]]`` entry), so a caller never
concatenates TOML text; a TOML fragment (``extra``) is still accepted and merged,
key by key, for callers that hold one.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Section = Mapping[str, Any]


def toml_value(value: Any) -> str:
    """``value`` as a TOML value: str/Path, bool, int, float (finite) or a list of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML value {value!r}: only finite numbers are written")
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"TOML value {value!r}: not a str, path, bool, number or list")


def _table(header: str, keys: Section) -> list[str]:
    return [header, *(f"{k} = {toml_value(v)}" for k, v in keys.items()), ""]


def split_fragment(extra: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A TOML fragment as (keys for ``[dispatcher]``, other sections): its bare keys
    stand in ``[dispatcher]``, as if the text followed that header."""
    doc = tomllib.loads(extra)
    bare = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    return bare, {k: v for k, v in doc.items() if isinstance(v, dict)}


def dispatcher_toml(
    *,
    listen: str | None = None,
    gateways: Iterable[Section] = (),
    zones: Iterable[Section] = (),
    secret_file: Path | str | None = None,
    admin_token_file: Path | str | None = None,
    dispatcher: Section | None = None,
    sections: Mapping[str, Section] | None = None,
    extra: str = "",
) -> str:
    """The text of a dispatcher config.

    ``listen``, ``secret_file`` and ``admin_token_file`` (each left out when None) open
    ``[dispatcher]``, then the keys of
    ``dispatcher``; ``sections`` maps a section name (``"health"``, ``"store"``, ...) to its keys;
    each of ``gateways`` becomes one ``[[gateways]]`` entry (``id``, ``address``, ``check``, ...),
    each of ``zones`` one ``[[zones]]`` entry (``name``, ``cidrs``, ``spill_to``).
    ``extra`` is a TOML fragment merged into these (see :func:`split_fragment`). A key given
    twice raises ValueError naming it, rather than writing a file the loader would refuse.
    """
    head: dict[str, Any] = {}
    if listen is not None:
        head["listen"] = listen
    if secret_file is not None:
        head["secret_file"] = secret_file
    if admin_token_file is not None:
        head["admin_token_file"] = admin_token_file
    merged: dict[str, dict[str, Any]] = {}
    fragment_head, fragment_sections = split_fragment(extra) if extra.strip() else ({}, {})
    for where, more in (("dispatcher", dispatcher or {}), ("extra", fragment_head)):
        for key, value in more.items():
            if key in head:
                raise ValueError(f"dispatcher.{key} given twice (again in {where})")
            head[key] = value
    for name, keys in [*(sections or {}).items(), *fragment_sections.items()]:
        if name in ("dispatcher", "gateways", "zones"):
            raise ValueError(f"[{name}] is written from its own argument, not as a section")
        table = merged.setdefault(name, {})
        for key, value in keys.items():
            if key in table:
                raise ValueError(f"{name}.{key} given twice")
            table[key] = value
    lines = _table("[dispatcher]", head)
    for name, keys in merged.items():
        lines += _table(f"[{name}]", keys)
    for zone in zones:
        lines += _table("[[zones]]", zone)
    for gw in gateways:
        lines += _table("[[gateways]]", gw)
    return "\n".join(lines)


def write_dispatcher_toml(path: Path, **description: Any) -> Path:
    """Write :func:`dispatcher_toml` (same keyword arguments) to ``path`` and return it."""
    path.write_text(dispatcher_toml(**description))
    return path
