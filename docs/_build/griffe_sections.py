"""Read two habits of the project's Google-style docstrings the way griffe needs them.

- An ``Example:`` section is read as ``Examples:`` (griffe knows only the plural); without this it
  would be rendered as a note whose ``>>>`` lines become Markdown quotes instead of code.
- An ``Args:`` entry that documents two parameters at once (``primary_key, secondary_key: …``) is
  read as one entry per parameter; griffe would otherwise look for a parameter named
  ``"primary_key, secondary_key"`` and warn, which fails the strict build.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_SECTION_HEADING = re.compile(r"^(\s*)([A-Z][A-Za-z ]*):\s*$")
_SHARED_ENTRY = re.compile(r"^(\s+)([A-Za-z_]\w*(?:, [A-Za-z_]\w*)+): (.*)$")


def _split_shared_arguments(text: str) -> str:
    lines: list[str] = []
    in_args = False
    for line in text.splitlines():
        heading = _SECTION_HEADING.match(line)
        if heading:
            in_args = heading.group(2) == "Args"
        shared = _SHARED_ENTRY.match(line) if in_args else None
        if shared:
            indent, names, description = shared.groups()
            lines.extend(f"{indent}{name}: {description}" for name in names.split(", "))
        else:
            lines.append(line)
    return "\n".join(lines)


class ExampleSections(griffe.Extension):
    """Rewrite every docstring as it is loaded (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = _EXAMPLE_HEADING.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _split_shared_arguments(value)
