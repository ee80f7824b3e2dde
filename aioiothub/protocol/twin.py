"""Device twin documents: JSON merge patches and the rules IoT Hub enforces on them.

Reported-property updates and desired-property notifications are JSON merge patches (RFC 7386):
objects merge key by key, ``null`` deletes a key, anything else replaces. The device applies desired
patches to its copy of the twin; the hub applies reported patches to the stored twin. Both sides check
patches with the same rules, so a patch the client accepts is one the hub accepts.

Depth is counted in nested containers below the section: ``{"a": {"b": 1}}`` has depth 1 and the
deepest allowed object sits under ten keys, as in IoT Hub's own ten-level example.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_TWIN_DEPTH",
    "MAX_TWIN_INTEGER",
    "MAX_TWIN_SECTION_BYTES",
    "MAX_TWIN_STRING_BYTES",
    "MIN_TWIN_INTEGER",
    "merge_patch",
    "validate_patch",
    "validate_section_size",
]

MAX_TWIN_DEPTH = 10
"""Deepest nesting of objects and arrays below a twin section."""

MAX_TWIN_SECTION_BYTES = 32768
"""Largest desired or reported section, as compact UTF-8 JSON without ``$version``/``$metadata``."""

MAX_TWIN_STRING_BYTES = 4096
"""Longest string value, in UTF-8 bytes."""

MAX_KEY_BYTES = 1024
"""Longest property name, in UTF-8 bytes."""

MIN_TWIN_INTEGER = -(2**52)
"""Smallest integer value IoT Hub stores."""

MAX_TWIN_INTEGER = 2**52 - 1
"""Largest integer value IoT Hub stores."""

# Service-maintained keys at the top of a section: never part of a patch's content or its size.
_SECTION_METADATA_KEYS = frozenset({"$version", "$metadata"})

_FORBIDDEN_KEY_CHARACTERS = frozenset(".$ ")


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping):
            existing = target.get(key)
            base = _copy(existing) if isinstance(existing, Mapping) else {}
            target[key] = _merge(base, value)
        else:
            target[key] = _copy(value)
    return target


def merge_patch(document: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Apply a JSON merge patch to a twin section and return the result as a new dict.

    ``null`` deletes a key, nested objects merge, any other value (arrays included) replaces. The
    top-level ``$version`` and ``$metadata`` keys of the patch are ignored; the document's own are kept.
    Neither input is modified and the result shares no containers with them.

    Args:
        document: the current section, e.g. the reported properties.
        patch: the merge patch.

    Returns:
        The patched section.

    Raises:
        TypeError: ``document`` or ``patch`` is not a mapping.
    """
    if not isinstance(document, Mapping):
        raise TypeError(f"document: expected a mapping, got {type(document).__name__}")
    if not isinstance(patch, Mapping):
        raise TypeError(f"patch: expected a mapping, got {type(patch).__name__}")
    content = {key: value for key, value in patch.items() if key not in _SECTION_METADATA_KEYS}
    merged: dict[str, Any] = _copy(document)
    return _merge(merged, content)


def _path(argument: str, keys: tuple[str | int, ...]) -> str:
    return argument + "".join(f"[{key!r}]" for key in keys)


def _utf8_length(text: str, where: str) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError as exc:
        raise ValueError(f"{where}: not encodable as UTF-8") from exc


def _check_key(key: object, argument: str, keys: tuple[str | int, ...]) -> str:
    if not isinstance(key, str):
        raise ValueError(f"{_path(argument, keys)}: key {key!r} is not a string")
    where = _path(argument, (*keys, key))
    if not key:
        raise ValueError(f"{where}: keys must not be empty")
    if _utf8_length(key, where) > MAX_KEY_BYTES:
        raise ValueError(f"{where}: keys must be at most {MAX_KEY_BYTES} bytes of UTF-8")
    for character in key:
        # C0 and C1 control characters are not allowed, and neither are ".", "$" and space.
        if character in _FORBIDDEN_KEY_CHARACTERS or ord(character) < 0x20 or 0x7F <= ord(character) <= 0x9F:
            raise ValueError(f"{where}: keys must not contain {character!r}")
    return key


def _check_value(value: object, argument: str, keys: tuple[str | int, ...], depth: int) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        where = _path(argument, keys)
        if _utf8_length(value, where) > MAX_TWIN_STRING_BYTES:
            raise ValueError(f"{where}: strings must be at most {MAX_TWIN_STRING_BYTES} bytes of UTF-8")
        return
    if isinstance(value, int):
        if not MIN_TWIN_INTEGER <= value <= MAX_TWIN_INTEGER:
            raise ValueError(f"{_path(argument, keys)}: integers must be within {MIN_TWIN_INTEGER}..{MAX_TWIN_INTEGER}")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{_path(argument, keys)}: {value!r} is not a JSON number")
        return
    if isinstance(value, dict | list):
        if depth >= MAX_TWIN_DEPTH:
            raise ValueError(f"{_path(argument, keys)}: nested deeper than {MAX_TWIN_DEPTH} levels")
        if isinstance(value, dict):
            _check_object(value, argument, keys, depth + 1)
        else:
            for index, item in enumerate(value):
                _check_value(item, argument, (*keys, index), depth + 1)
        return
    raise ValueError(f"{_path(argument, keys)}: {type(value).__name__} is not a JSON type")


def _check_object(value: Mapping[Any, Any], argument: str, keys: tuple[str | int, ...], depth: int) -> None:
    for key, item in value.items():
        name = _check_key(key, argument, keys)
        _check_value(item, argument, (*keys, name), depth)


def validate_patch(patch: Mapping[str, Any], *, argument: str = "patch") -> None:
    """Check a twin patch (or section) against IoT Hub's rules before it is sent or stored.

    Keys must be non-empty, at most 1024 bytes of UTF-8 and free of ``.``, ``$``, space and control
    characters; nesting at most :data:`MAX_TWIN_DEPTH` levels below the top; strings at most 4096
    bytes of UTF-8; integers within :data:`MIN_TWIN_INTEGER`..:data:`MAX_TWIN_INTEGER`; values only
    dict, list, str, int, finite float, bool or ``None`` (``None`` deletes in a patch).

    Args:
        patch: the patch to check.
        argument: the name used at the start of error messages, e.g. ``patch['a']['b']: ...``.

    Raises:
        TypeError: ``patch`` is not a mapping.
        ValueError: a rule is broken; the message names the offending key path.
    """
    if not isinstance(patch, Mapping):
        raise TypeError(f"{argument}: expected a mapping, got {type(patch).__name__}")
    _check_object(patch, argument, (), 0)


def validate_section_size(section: Mapping[str, Any], *, argument: str) -> None:
    """Check that a desired or reported section fits IoT Hub's 32 KiB limit.

    The size is that of the compact UTF-8 JSON of the section without its top-level ``$version``
    and ``$metadata`` keys.

    Args:
        section: the whole section after a patch has been applied.
        argument: the name used in error messages.

    Raises:
        TypeError: ``section`` is not a mapping.
        ValueError: the section is too large or cannot be written as JSON.
    """
    if not isinstance(section, Mapping):
        raise TypeError(f"{argument}: expected a mapping, got {type(section).__name__}")
    content = {key: value for key, value in section.items() if key not in _SECTION_METADATA_KEYS}
    try:
        text = json.dumps(content, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode())
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{argument}: not representable as JSON: {exc}") from exc
    if size > MAX_TWIN_SECTION_BYTES:
        raise ValueError(f"{argument}: {size} bytes of JSON exceed the {MAX_TWIN_SECTION_BYTES} byte limit")
