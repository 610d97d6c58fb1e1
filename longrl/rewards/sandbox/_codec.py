"""Tagged-JSON codec for values crossing the sandbox boundary (function-call tests).

This file is imported by the trusted parent *and* pasted verbatim into the in-sandbox stub (it
must stay standard-library only, importing nothing at module level). The untrusted side may
replace or patch its copy: that is harmless, because the parent decodes with its own copy, and the
decoder only ever builds plain built-in values (``None``, ``bool``, ``int``, ``float``, ``str``,
``bytes``, ``complex``, ``list``, ``tuple``, ``dict``, ``set``, ``frozenset``). An object whose
``__eq__`` always answers ``True`` therefore cannot cross: comparisons in the parent run on
built-in types only.

Encoding: JSON scalars stand for themselves, a JSON list is a Python list, and every other value
is a one-key JSON object whose key is its tag, e.g. ``{"tuple": [1, 2]}``. Floats that JSON cannot
hold (nan, inf) and ints of 19+ digits (JSON readers differ on those) are tagged too.
"""

_MAX_DEPTH = 64  # deeper values are refused on both sides: protects the parent's recursion


def encode_value(x, _depth=0):
    """A JSON-able structure for ``x``; ``TypeError`` for anything but plain built-in values."""
    if _depth > _MAX_DEPTH:
        raise TypeError("value nested too deeply")
    t = type(x)  # exact types: a subclass could carry a forged __eq__ or __repr__
    d = _depth + 1
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return x if -(10**18) < x < 10**18 else {"int": format(x, "x")}
    if t is float:
        return x if x - x == 0.0 else {"float": repr(x)}  # x - x is nan for nan and +-inf
    if t is list:
        return [encode_value(v, d) for v in x]
    if t is tuple:
        return {"tuple": [encode_value(v, d) for v in x]}
    if t is set or t is frozenset:
        return {t.__name__: [encode_value(v, d) for v in x]}
    if t is dict:
        return {"dict": [[encode_value(k, d), encode_value(v, d)] for k, v in x.items()]}
    if t is bytes:
        return {"bytes": x.hex()}
    if t is complex:
        return {"complex": [encode_value(x.real, d), encode_value(x.imag, d)]}
    raise TypeError("cannot pass a value of type " + t.__name__ + " across the sandbox boundary")


def decode_value(y, _depth=0):
    """Inverse of :func:`encode_value`; ``ValueError`` on anything it would not produce."""
    if _depth > _MAX_DEPTH:
        raise ValueError("value nested too deeply")
    t = type(y)
    d = _depth + 1
    if y is None or t is bool or t is str or t is float:
        return y
    if t is int:
        return y
    if t is list:
        return [decode_value(v, d) for v in y]
    if t is not dict or len(y) != 1:
        raise ValueError("malformed value")
    (tag, v), = y.items()
    if tag == "int" and type(v) is str:
        return int(v, 16)
    if tag == "float" and v in ("nan", "inf", "-inf"):
        return float(v)
    if tag == "bytes" and type(v) is str:
        return bytes.fromhex(v)
    if type(v) is not list:
        raise ValueError("malformed value")
    if tag == "tuple":
        return tuple(decode_value(i, d) for i in v)
    if tag == "set":
        return {decode_value(i, d) for i in v}
    if tag == "frozenset":
        return frozenset(decode_value(i, d) for i in v)
    if tag == "dict":
        out = {}
        for kv in v:
            if type(kv) is not list or len(kv) != 2:
                raise ValueError("malformed dict item")
            out[decode_value(kv[0], d)] = decode_value(kv[1], d)
        return out
    if tag == "complex" and len(v) == 2:
        return complex(decode_value(v[0], d), decode_value(v[1], d))
    raise ValueError("unknown value tag " + repr(tag)[:40])


def dumps_value(x):
    import json  # imported here: json costs the stub ~8 ms (re, enum), paid only when used

    return json.dumps(encode_value(x), allow_nan=False)


def loads_value(s):
    import json

    return decode_value(json.loads(s))
