"""Conversion of an entry's value to plain JSON data, done inside the sandboxed child.

Only exact ``bool``/``int``/``float``/``str``/``None`` and (possibly nested) lists, tuples and
str-keyed dicts of them survive. Numeric look-alikes are converted through the *base-class*
methods (``int.__index__``, ``float.__float__``) so an overridden ``__eq__``, ``__index__``,
``__float__`` or ``__repr__`` cannot smuggle anything to the parent, which only ever sees the
``json.loads`` of the text produced here.
"""
from __future__ import annotations

import numbers
import operator
import sys

MAX_DEPTH = 64
MAX_ITEMS = 1_000_000


class NotJSONSafe(TypeError):
    pass


def _exact_int(x) -> int:
    if type(x) is int:
        return x
    if isinstance(x, int):
        return int.__index__(x)
    v = operator.index(x)
    return v if type(v) is int else int.__index__(v)


def _exact_float(x) -> float:
    if type(x) is float:
        return x
    if isinstance(x, float):
        return float.__float__(x)
    v = float(x)
    return v if type(v) is float else float.__float__(v)


def to_plain(value):
    """Return ``value`` as plain JSON-compatible data or raise :class:`NotJSONSafe`."""
    count = [0]

    def conv_dict(x, depth):
        out = {}
        for k, v in dict.items(x):
            if type(k) is not str:
                raise NotJSONSafe(f"entry returned a dict with a non-str key of type {type(k).__name__}")
            out[k] = conv(v, depth + 1)
        return out

    def conv(x, depth):
        count[0] += 1
        if count[0] > MAX_ITEMS:
            raise NotJSONSafe("entry returned a value with too many elements")
        if depth > MAX_DEPTH:
            raise NotJSONSafe("entry returned a value nested too deeply")
        t = type(x)
        if x is None or t is bool or t is str or t is int or t is float:
            return x
        if t is list or t is tuple:
            return [conv(i, depth + 1) for i in x]
        if t is dict:
            return conv_dict(x, depth)
        # subclasses and numeric look-alikes, converted through base-class methods
        if isinstance(x, str):
            return str.__str__(x)
        if isinstance(x, numbers.Integral):
            return _exact_int(x)
        if isinstance(x, numbers.Real):  # includes fractions.Fraction
            return _exact_float(x)
        # decimal is looked up, not imported (the sandbox worker keeps its imports lean):
        # a Decimal can only exist if the program imported the module
        dec = sys.modules.get("decimal")
        if dec is not None and isinstance(x, dec.Decimal):
            return _exact_float(x)
        if t.__module__ == "numpy" and t.__name__ in ("bool_", "bool"):
            return bool(x.item()) is True
        if isinstance(x, list):
            return [conv(i, depth + 1) for i in list.__iter__(x)]
        if isinstance(x, tuple):
            return [conv(i, depth + 1) for i in tuple.__iter__(x)]
        if isinstance(x, dict):
            return conv_dict(x, depth)
        raise NotJSONSafe(f"entry returned non-JSON-safe value of type {t.__name__}")

    return conv(value, 0)
