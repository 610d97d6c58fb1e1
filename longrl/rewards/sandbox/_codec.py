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

Decoding untrusted replies is bounded in time. The untrusted side can hand the parent any JSON it
likes (it can swap the stub's encoder: the stub's globals are one frame above the candidate's
function), and rebuilding a hash container is quadratic when its keys' hashes collide: the ints
``k * (2**61 - 1)`` all hash to 0, and a set of 100,000 of them (a 3.3 MB reply) took 67-143 s
to decode on 2 cores. So a set, frozenset or dict whose items share one hash more than ``_MAX_SAME_HASH``
times is refused before it is built (hashes are counted in a dict keyed by the hash values: ints
below 2**61 - 1 hash to themselves, so those keys never collide), and the decoder checks an
optional deadline as it goes.
"""

_MAX_DEPTH = 64  # deeper values are refused on both sides: protects the parent's recursion
_MAX_SAME_HASH = 8  # items of one set / dict with one hash (legitimately: -1 and -2, 0.5 and 2**60)
_CLOCK_EVERY = 2048  # values decoded between two looks at the deadline (~1 ms of work)


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


def decode_value(y, deadline=None):
    """Inverse of :func:`encode_value`; ``ValueError`` on anything it would not produce (nested
    too deeply, a hash container of colliding keys), ``TimeoutError`` once ``time.monotonic()``
    passes ``deadline`` (None: no deadline; the stub decodes only the parent's arguments)."""
    clock = None
    if deadline is not None:
        from time import monotonic as clock  # a built-in module: nothing to load in the stub
    seen = [0]

    def dec(y, depth):
        if depth > _MAX_DEPTH:
            raise ValueError("value nested too deeply")
        seen[0] += 1
        if clock is not None and seen[0] % _CLOCK_EVERY == 0 and clock() > deadline:
            raise TimeoutError("reading the value took past its deadline")
        t = type(y)
        d = depth + 1
        if y is None or t is bool or t is str or t is float or t is int:
            return y
        if t is list:
            return [dec(v, d) for v in y]
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
            return tuple([dec(i, d) for i in v])
        if tag == "set" or tag == "frozenset":
            items = [dec(i, d) for i in v]
            _check_hashes(items, tag)
            return set(items) if tag == "set" else frozenset(items)
        if tag == "dict":
            for kv in v:
                if type(kv) is not list or len(kv) != 2:
                    raise ValueError("malformed dict item")
            keys = [dec(kv[0], d) for kv in v]
            _check_hashes(keys, "dict")
            return dict(zip(keys, [dec(kv[1], d) for kv in v]))
        if tag == "complex" and len(v) == 2:
            return complex(dec(v[0], d), dec(v[1], d))
        raise ValueError("unknown value tag " + repr(tag)[:40])

    return dec(y, 0)


def _check_hashes(items, what):
    """``ValueError`` when more than ``_MAX_SAME_HASH`` of ``items`` share a hash (``TypeError``
    for an unhashable one): building the container would cost O(len(items)**2) comparisons."""
    counts = {}
    for x in items:
        h = hash(x)
        c = counts.get(h, 0) + 1
        if c > _MAX_SAME_HASH:
            raise ValueError(what + " of " + str(len(items)) + " items whose hashes collide")
        counts[h] = c


def dumps_value(x):
    import json  # imported here: json costs the stub ~8 ms (re, enum), paid only when used

    return json.dumps(encode_value(x), allow_nan=False)


def loads_value(s, deadline=None):
    import json

    return decode_value(json.loads(s), deadline)
