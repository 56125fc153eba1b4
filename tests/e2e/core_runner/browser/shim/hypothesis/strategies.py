"""The strategies of ``hypothesis.strategies`` that tests/unit/core uses, drawing random
examples biased, like hypothesis, towards small sizes and edge values (bounds, zero, empty,
NaN and infinities, control, non-BMP and surrogate characters)."""

from minitest import Unsatisfied

MASK32 = 0xFFFFFFFF


class Random:
    """xorshift32: small, deterministic, the same on every interpreter."""

    def __init__(self, seed):
        self.state = (seed & MASK32) or 0x9E3779B9
        self.depth = 0

    def bits32(self):
        x = self.state
        x ^= (x << 13) & MASK32
        x ^= x >> 17
        x ^= (x << 5) & MASK32
        self.state = x
        return x

    def below(self, n):
        """A uniform integer in ``[0, n)`` for any ``n >= 1``, however large."""
        if n <= 1:
            return 0
        if n <= 0x10000:
            return self.bits32() % n
        value = 0
        span = 1
        while span < n * 256:
            value = (value << 32) | self.bits32()
            span <<= 32
        return value % n

    def chance(self, p):
        return self.bits32() < p * 4294967296.0

    def uniform(self):
        return self.bits32() / 4294967296.0

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def draw(self, strategy):
        return strategy.do_draw(self)


def _bit_length(n):
    n = -n if n < 0 else n
    out = 0
    while n:
        n >>= 1
        out += 1
    return out


class SearchStrategy:
    def do_draw(self, rnd):
        raise NotImplementedError

    def __or__(self, other):
        return one_of(self, other)

    def map(self, fn):
        return _Mapped(self, fn)

    def filter(self, fn):
        return _Filtered(self, fn)

    def flatmap(self, fn):
        return _FlatMapped(self, fn)

    def example(self):
        return Random(12345).draw(self)


class _Mapped(SearchStrategy):
    def __init__(self, base, fn):
        self.base, self.fn = base, fn

    def do_draw(self, rnd):
        return self.fn(self.base.do_draw(rnd))


class _Filtered(SearchStrategy):
    def __init__(self, base, fn):
        self.base, self.fn = base, fn

    def do_draw(self, rnd):
        for _ in range(100):
            value = self.base.do_draw(rnd)
            if self.fn(value):
                return value
        raise Unsatisfied("filter")


class _FlatMapped(SearchStrategy):
    def __init__(self, base, fn):
        self.base, self.fn = base, fn

    def do_draw(self, rnd):
        return self.fn(self.base.do_draw(rnd)).do_draw(rnd)


class _Just(SearchStrategy):
    def __init__(self, value):
        self.value = value

    def do_draw(self, rnd):
        return self.value


def just(value):
    return _Just(value)


def none():
    return _Just(None)


class _Booleans(SearchStrategy):
    def do_draw(self, rnd):
        return rnd.bits32() & 1 == 1


def booleans():
    return _Booleans()


class _SampledFrom(SearchStrategy):
    def __init__(self, elements):
        self.elements = list(elements)
        if not self.elements:
            raise ValueError("sampled_from needs at least one element")

    def do_draw(self, rnd):
        return rnd.choice(self.elements)


def sampled_from(elements):
    return _SampledFrom(elements)


class _OneOf(SearchStrategy):
    def __init__(self, options):
        self.options = []
        for option in options:  # flatten a | b | c
            if isinstance(option, _OneOf):
                self.options.extend(option.options)
            else:
                self.options.append(option)

    def do_draw(self, rnd):
        return rnd.choice(self.options).do_draw(rnd)


def one_of(*options):
    if len(options) == 1 and isinstance(options[0], (list, tuple)):
        options = options[0]
    return _OneOf(options)


class _Integers(SearchStrategy):
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def do_draw(self, rnd):
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            if rnd.chance(0.15):
                edges = [lo, hi, lo + 1, hi - 1, 0, -1, 1]
                edges = [e for e in edges if lo <= e <= hi]
                return rnd.choice(edges)
            if rnd.chance(0.5) or hi - lo <= 256:
                return lo + rnd.below(hi - lo + 1)
            # A random magnitude, so small offsets are as likely as huge ones.
            span = 1 << rnd.below(_bit_length(hi - lo) + 1)
            start = lo if rnd.chance(0.5) else max(lo, hi - span)
            return min(hi, start + rnd.below(span))
        if rnd.chance(0.1):
            value = rnd.choice([0, 1, -1, 2**31, -(2**31), 2**53, -(2**53), 2**63, -(2**64)])
        else:
            value = rnd.below(1 << rnd.choice([4, 8, 16, 32, 64, 128]))
            if rnd.chance(0.5):
                value = -value
        if lo is not None and value < lo:
            value = lo + (lo - value) % 1000
        if hi is not None and value > hi:
            value = hi - (value - hi) % 1000
        return value


def integers(min_value=None, max_value=None):
    if min_value is not None and max_value is not None and min_value > max_value:
        raise ValueError("integers: min_value > max_value")
    return _Integers(min_value, max_value)


_NAN = float("nan")
_INF = float("inf")
_SPECIAL_FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -2.5,
    1.5,
    1e-300,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    9007199254740992.0,
    9007199254740993.0,
    1e16,
    -1e22,
    0.1,
    1 / 3,
]


class _Floats(SearchStrategy):
    def __init__(self, lo, hi, allow_nan, allow_infinity):
        self.lo, self.hi = lo, hi
        unbounded = lo is None and hi is None
        self.allow_nan = unbounded if allow_nan is None else allow_nan
        self.allow_infinity = (
            (lo is None or hi is None) if allow_infinity is None else allow_infinity
        )

    def do_draw(self, rnd):
        lo, hi = self.lo, self.hi
        for _ in range(20):
            pick = rnd.below(10)
            if pick == 0 and (self.allow_nan or self.allow_infinity):
                specials = ([_NAN] if self.allow_nan else []) + (
                    [_INF, -_INF] if self.allow_infinity else []
                )
                value = rnd.choice(specials)
            elif pick <= 2:
                value = rnd.choice(_SPECIAL_FLOATS)
            elif lo is not None and hi is not None and pick <= 6:
                value = lo + (hi - lo) * rnd.uniform()
                if rnd.chance(0.1):
                    value = rnd.choice([lo, hi])
            elif pick <= 6:
                value = (rnd.uniform() - 0.5) * 10.0 ** rnd.below(20)
            else:
                value = (rnd.uniform() * 2 - 1) * 10.0 ** (rnd.below(616) - 308)
            if value != value:
                return value
            if value in (_INF, -_INF):
                if (lo is None or value > lo) and (hi is None or value < hi):
                    return value
                continue
            if (lo is None or value >= lo) and (hi is None or value <= hi):
                return value
        return lo if lo is not None else hi


def floats(
    min_value=None,
    max_value=None,
    allow_nan=None,
    allow_infinity=None,
    allow_subnormal=None,
    width=64,
    exclude_min=False,
    exclude_max=False,
):
    if exclude_min or exclude_max or width != 64:
        raise NotImplementedError("floats: exclude_min, exclude_max and width are not supported")
    return _Floats(min_value, max_value, allow_nan, allow_infinity)


# Code point pools: ASCII printable, ASCII control, Latin-1, the rest of the BMP (without
# surrogates), astral planes.
_POOLS = [(0x20, 0x7E, 55), (0x00, 0x1F, 8), (0x7F, 0xFF, 10), (0x100, 0xD7FF, 12)]
_POOLS += [(0xE000, 0xFFFF, 5), (0x10000, 0x10FFFF, 10)]
_SURROGATES = (0xD800, 0xDFFF)


class _Characters(SearchStrategy):
    def __init__(self, lo, hi, exclude, include, surrogates, only_surrogates):
        self.lo, self.hi = lo, hi
        self.exclude = exclude
        self.include = include
        self.pools = []
        if only_surrogates:
            self.pools = [(_SURROGATES[0], _SURROGATES[1], 1)]
        else:
            self.pools = list(_POOLS)
            if surrogates:
                self.pools.append((_SURROGATES[0], _SURROGATES[1], 5))
        self.pools = [(max(a, lo), min(b, hi), w) for a, b, w in self.pools if b >= lo and a <= hi]
        self.total = sum(w for _, _, w in self.pools)

    def do_draw(self, rnd):
        for _ in range(50):
            if self.include and (not self.pools or rnd.chance(0.3)):
                ch = rnd.choice(self.include)
            else:
                pick = rnd.below(self.total)
                for a, b, w in self.pools:
                    if pick < w:
                        ch = chr(a + rnd.below(b - a + 1))
                        break
                    pick -= w
            if ch not in self.exclude:
                return ch
        raise Unsatisfied("characters")


def characters(
    min_codepoint=None,
    max_codepoint=None,
    categories=None,
    exclude_categories=None,
    include_characters=None,
    exclude_characters=None,
    codec=None,
    whitelist_categories=None,
    blacklist_categories=None,
    blacklist_characters=None,
    whitelist_characters=None,
):
    """Only category sets this module can tell apart without ``unicodedata``: all but
    surrogates (the default), everything (``exclude_categories=()``), surrogates only
    (``categories=["Cs"]``)."""
    categories = categories if categories is not None else whitelist_categories
    exclude_categories = (
        exclude_categories if exclude_categories is not None else blacklist_categories
    )
    include = list(include_characters or whitelist_characters or "")
    exclude = exclude_characters or blacklist_characters or ""
    lo = 0 if min_codepoint is None else min_codepoint
    hi = 0x10FFFF if max_codepoint is None else max_codepoint
    if codec == "ascii":
        hi = min(hi, 0x7F)
    elif codec == "latin-1":
        hi = min(hi, 0xFF)
    elif codec not in (None, "utf-8"):
        raise NotImplementedError("characters: codec " + repr(codec))
    only = False
    surrogates = False
    if categories is not None:
        if list(categories) == ["Cs"]:
            only = True
        elif list(categories) == [] and include:
            chars = _Characters(lo, hi, exclude, include, False, False)
            chars.pools, chars.total = [], 0
            return chars
        else:
            raise NotImplementedError("characters: categories " + repr(categories))
    elif exclude_categories is not None:
        if list(exclude_categories) == []:
            surrogates = True
        elif list(exclude_categories) != ["Cs"]:
            raise NotImplementedError("characters: exclude_categories " + repr(exclude_categories))
    return _Characters(lo, hi, exclude, include, surrogates, only)


def _size(rnd, min_size, max_size, average=5):
    """A collection size: mostly small, sometimes the bounds."""
    cap = max_size if max_size is not None else max(min_size + average * 4, 10)
    if cap <= min_size:
        return min_size
    if rnd.chance(0.1):
        return rnd.choice([min_size, cap])
    size = min_size
    while size < cap and not rnd.chance(1.0 / (average + 1)):
        size += 1
    return size


class _Text(SearchStrategy):
    def __init__(self, alphabet, min_size, max_size):
        if isinstance(alphabet, str):
            alphabet = sampled_from(list(alphabet))
        self.alphabet = alphabet
        self.min_size, self.max_size = min_size, max_size

    def do_draw(self, rnd):
        n = _size(rnd, self.min_size, self.max_size)
        return "".join(self.alphabet.do_draw(rnd) for _ in range(n))


def text(alphabet=None, min_size=0, max_size=None):
    return _Text(alphabet if alphabet is not None else characters(), min_size, max_size)


class _Binary(SearchStrategy):
    def __init__(self, min_size, max_size):
        self.min_size, self.max_size = min_size, max_size

    def do_draw(self, rnd):
        n = _size(rnd, self.min_size, self.max_size)
        if rnd.chance(0.2):  # mostly text-like bytes, sometimes anything
            return bytes(rnd.below(256) for _ in range(n))
        return bytes(rnd.choice(b' {}[]":,0129aenlrstu\\\xc3\xa9\xff') for _ in range(n))


def binary(min_size=0, max_size=None):
    return _Binary(min_size, max_size)


class _Lists(SearchStrategy):
    def __init__(self, elements, min_size, max_size, unique, unique_by):
        self.elements = elements
        self.min_size, self.max_size = min_size, max_size
        self.key = unique_by if unique_by is not None else ((lambda v: v) if unique else None)

    def do_draw(self, rnd):
        n = _size(rnd, self.min_size, self.max_size)
        out = []
        seen = []
        tries = 0
        while len(out) < n and tries < n * 10 + 10:
            tries += 1
            value = self.elements.do_draw(rnd)
            if self.key is not None:
                k = self.key(value)
                if k in seen:
                    continue
                seen.append(k)
            out.append(value)
        if len(out) < self.min_size:
            raise Unsatisfied("lists: unique elements")
        return out


def lists(elements, min_size=0, max_size=None, unique=False, unique_by=None):
    return _Lists(elements, min_size, max_size, unique, unique_by)


def sets(elements, min_size=0, max_size=None):
    return _Lists(elements, min_size, max_size, True, None).map(set)


class _Tuples(SearchStrategy):
    def __init__(self, parts):
        self.parts = parts

    def do_draw(self, rnd):
        return tuple(p.do_draw(rnd) for p in self.parts)


def tuples(*parts):
    return _Tuples(parts)


class _Dictionaries(SearchStrategy):
    def __init__(self, keys, values, min_size, max_size):
        self.keys, self.values = keys, values
        self.min_size, self.max_size = min_size, max_size

    def do_draw(self, rnd):
        n = _size(rnd, self.min_size, self.max_size)
        out = {}
        tries = 0
        while len(out) < n and tries < n * 10 + 10:
            tries += 1
            out[self.keys.do_draw(rnd)] = self.values.do_draw(rnd)
        if len(out) < self.min_size:
            raise Unsatisfied("dictionaries: distinct keys")
        return out


def dictionaries(keys, values, min_size=0, max_size=None):
    return _Dictionaries(keys, values, min_size, max_size)


class _FixedDictionaries(SearchStrategy):
    def __init__(self, required, optional):
        self.required = required
        self.optional = optional or {}

    def do_draw(self, rnd):
        out = {}
        for key in self.required:
            out[key] = self.required[key].do_draw(rnd)
        for key in self.optional:
            if rnd.chance(0.5):
                out[key] = self.optional[key].do_draw(rnd)
        return out


def fixed_dictionaries(mapping, optional=None):
    return _FixedDictionaries(mapping, optional)


class _Recursive(SearchStrategy):
    """``base | extend(base | extend(...))`` down to a random depth of at most four."""

    def __init__(self, base, extend, max_leaves):
        self.levels = [base]
        self.max_leaves = max_leaves
        for _ in range(4):
            self.levels.append(base | extend(self.levels[-1]))

    def do_draw(self, rnd):
        depth = rnd.below(len(self.levels))
        return self.levels[depth].do_draw(rnd)


def recursive(base, extend, max_leaves=100):
    return _Recursive(base, extend, max_leaves)


class _Builds(SearchStrategy):
    def __init__(self, target, args, kwargs):
        self.target, self.args, self.kwargs = target, args, kwargs

    def do_draw(self, rnd):
        args = [a.do_draw(rnd) for a in self.args]
        kwargs = {}
        for key in self.kwargs:
            kwargs[key] = self.kwargs[key].do_draw(rnd)
        return self.target(*args, **kwargs)


def builds(target, *args, **kwargs):
    return _Builds(target, args, kwargs)


class _Composite(SearchStrategy):
    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def do_draw(self, rnd):
        return self.fn(rnd.draw, *self.args, **self.kwargs)


def composite(fn):
    def make(*args, **kwargs):
        return _Composite(fn, args, kwargs)

    return make


class DataObject:
    def __init__(self, rnd):
        self.rnd = rnd

    def draw(self, strategy, label=None):
        return strategy.do_draw(self.rnd)


class _Data(SearchStrategy):
    def do_draw(self, rnd):
        return DataObject(rnd)


def data():
    return _Data()


class _Deferred(SearchStrategy):
    def __init__(self, fn):
        self.fn = fn

    def do_draw(self, rnd):
        return self.fn().do_draw(rnd)


def deferred(fn):
    return _Deferred(fn)


#: Names tests use in annotations only (never evaluated by MicroPython or, with
#: ``from __future__ import annotations``, by Pyodide).
DrawFn = object
