"""JSON from files others wrote: size and nesting bounded before the parser sees it.

Python's :func:`json.loads` recurses once per nesting level: a 100,000-deep ``[[[...]]]`` (a few hundred kB in a
checkpoint's metadata) raises ``RecursionError`` from deep inside the parser. :func:`loads_bounded` counts the
nesting first (brackets outside string literals, one linear pass) and refuses text that is too long or too deep
with a one-line ``ValueError``, so only small, shallow documents reach the parser.

Standard library only.
"""

from __future__ import annotations

import json
import re

__all__ = ["JSONLimitError", "loads_bounded", "nesting_depth"]

# a JSON string literal (escapes included); what remains outside them are structure, numbers and keywords
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


class JSONLimitError(ValueError):
    """JSON text that is too long, too deeply nested or not JSON at all."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (0 for a scalar), strings ignored.

    >>> nesting_depth('{"a": [1, {"b": "[[["}]}')
    3
    """
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def loads_bounded(text: str | bytes, what: str, *, max_chars: int, max_depth: int) -> object:
    """``json.loads(text)`` for text of at most ``max_chars`` characters nested at most ``max_depth`` deep;
    else :class:`JSONLimitError` naming ``what``."""
    if isinstance(text, bytes):
        if len(text) > max_chars:
            raise JSONLimitError(f"{what} is {len(text):,} bytes; at most {max_chars:,} are read")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JSONLimitError(f"{what} is not UTF-8 text: {e}") from None
    if len(text) > max_chars:
        raise JSONLimitError(f"{what} is {len(text):,} characters; at most {max_chars:,} are read")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JSONLimitError(f"{what} is nested {depth} levels deep; at most {max_depth} are read")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise JSONLimitError(f"{what} is not valid JSON: {e}") from None
