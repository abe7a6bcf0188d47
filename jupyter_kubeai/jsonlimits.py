"""JSON request bodies parsed with limits, for every HTTP server of the project.

Python's :func:`json.loads` accepts what hurts a server: nesting down to the
interpreter's recursion limit (deeper raises ``RecursionError``, a 500),
integer literals of any length up to 4,300 digits (longer raises a bare
``ValueError``; shorter ones overflow SQL drivers and numpy later, far from
the request), ``NaN``/``Infinity`` and ``1e999`` (not JSON; answered back
they break every client). :func:`loads` refuses all of these with
:class:`~jupyter_kubeai.errors.InvalidInput` (a 400 with a message), and
optionally strings holding NUL characters (no file path, name or label may
hold one).

Cheap on the model server's hot path: two byte translations, a few
substring searches, and the C decoder unchanged for nearly every body. A
body with no more ``[`` and ``{`` than the depth limit cannot nest deeper
(only others get the exact scan, which skips strings); one without a run of
19 digits nor a three-digit exponent holds no integer beyond 64 bits and no
float that overflows (only others are decoded with a check on every number).
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate

from .errors import InvalidInput

#: Deepest nesting of arrays and objects accepted.
MAX_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Digits -> "0", "E" -> "e", "+" dropped: then two substring searches find any
# run of 19 digits (the shortest literal that can exceed int64) or a three-digit
# exponent (the shortest that can overflow a float), in strings too (a false
# alarm only costs the exact path).
_DIGITS = bytes.maketrans(b"0123456789E", b"0000000000e")
_LONG_INT, _LONG_EXPONENT = b"0" * 19, b"e000"
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# What decides where strings and brackets are: brackets, quotes, backslashes and the
# letters an escape may have after its backslash (so an escaped newline, backslash + n,
# never leaves a lone backslash before the closing quote). Dropping the rest (numbers,
# most text) in one pass leaves a short text to count and scan.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"\\/bfnrtu')
# Only the brackets survive, as +1 (b"\x01") and -1 (b"\xff" read as a signed byte).
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def _refuse_constant(name: str):
    raise InvalidInput(f"{name} is not a JSON number; send a finite number (or null).")


def _int64(text: str) -> int:
    if len(text.lstrip("-")) > 19 or not INT64_MIN <= (value := int(text)) <= INT64_MAX:
        shown = text if len(text) <= 30 else text[:20] + f"... ({len(text)} characters)"
        raise InvalidInput(f"The integer {shown} does not fit in 64 bits; send a number between {INT64_MIN} and {INT64_MAX}.")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 30 else text[:20] + f"... ({len(text)} characters)"
        raise InvalidInput(f"The number {shown} is too large for a 64-bit float.")
    return value


_FAST = json.JSONDecoder(parse_constant=_refuse_constant)
_EXACT = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_int64, parse_float=_finite)


def _depth(structure: bytes) -> int:
    brackets = _STRING.sub(b"", structure).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    return max(accumulate(memoryview(brackets).cast("b")), default=0)


def depth(data: bytes) -> int:
    """The deepest nesting of arrays/objects in the JSON text ``data`` (brackets inside strings do not count)."""
    return _depth(data.translate(None, _NOT_STRUCTURE))

def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def loads(data: bytes | str, *, what: str = "The request body", max_depth: int = MAX_DEPTH, allow_nul: bool = True):
    """The JSON value in ``data`` (UTF-8), or :class:`InvalidInput` saying what is wrong with it.

    ``max_depth``: the deepest nesting accepted; integers must fit in 64
    bits, floats must be finite, ``NaN``/``Infinity`` are refused; with
    ``allow_nul=False`` so is any string (key or value) holding a NUL.
    """
    if isinstance(data, str):
        text, raw = data, data.encode("utf-8", "surrogatepass")
    else:
        raw = data
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInput(f"{what} is not UTF-8 text: {e}") from None
    structure = raw.translate(None, _NOT_STRUCTURE)
    if structure.count(b"[") + structure.count(b"{") > max_depth and _depth(structure) > max_depth:
        raise InvalidInput(f"{what} nests arrays/objects deeper than {max_depth} levels.")
    digits = raw.translate(_DIGITS, b"+")
    decoder = _EXACT if _LONG_INT in digits or _LONG_EXPONENT in digits else _FAST
    try:
        value = decoder.decode(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{what} is not valid JSON: {e}") from None
    except (RecursionError, ValueError) as e:  # backstops: the scans above should have caught these
        raise InvalidInput(f"{what} is not acceptable JSON: {e}") from None
    if not allow_nul and "\\u0000" in text and _has_nul(value):
        raise InvalidInput(f"{what} holds a NUL character (\\u0000) in a string; remove it.")
    return value
