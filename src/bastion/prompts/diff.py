"""Differences between two prompt versions, as a unified diff of their readable YAML.

The specs are dumped in a fixed key order with message templates as literal blocks, so a change of one
line in a template shows as that line, not as a changed quoted string.
"""

from __future__ import annotations

import difflib
from typing import Any

from bastion import yamlfile

from .spec import readable


def spec_text(spec: dict[str, Any]) -> str:
    return yamlfile.dump(readable(spec))


def unified(a_spec: dict[str, Any], b_spec: dict[str, Any], a_title: str, b_title: str, context: int = 3) -> str:
    """The unified diff from ``a`` to ``b``; empty when the specs are the same."""
    a_lines = spec_text(a_spec).splitlines(keepends=True)
    b_lines = spec_text(b_spec).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a_lines, b_lines, fromfile=a_title, tofile=b_title, n=context))
