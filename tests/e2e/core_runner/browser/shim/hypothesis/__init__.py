# ruff: noqa: B905 - MicroPython's zip() takes no strict= (this file runs there)
"""``hypothesis`` for tests running in the browser (Pyodide has no wheel offline, MicroPython
no port): ``@given`` runs the test on ``max_examples`` random examples drawn from the
strategies of ``hypothesis.strategies``, the same number as real hypothesis.

What it does not do: shrinking, the example database, health checks, deadlines.  Examples
come from a deterministic generator seeded by the run seed, the test id and the example
number, so a failure names its seed and example and repeats on every interpreter.
"""

from minitest import Failed, Marked, Skipped, Unsatisfied, describe, marked

from . import strategies
from .strategies import Random

__all__ = [
    "HealthCheck",
    "Phase",
    "Verbosity",
    "assume",
    "example",
    "given",
    "note",
    "reject",
    "settings",
    "strategies",
]


class HealthCheck:
    data_too_large = "data_too_large"
    filter_too_much = "filter_too_much"
    too_slow = "too_slow"
    return_value = "return_value"
    large_base_example = "large_base_example"
    not_a_test_method = "not_a_test_method"
    function_scoped_fixture = "function_scoped_fixture"
    differing_executors = "differing_executors"
    nested_given = "nested_given"

    @staticmethod
    def all():
        return []


class Verbosity:
    quiet = 0
    normal = 1
    verbose = 2
    debug = 3


class Phase:
    explicit = "explicit"
    reuse = "reuse"
    generate = "generate"
    target = "target"
    shrink = "shrink"
    explain = "explain"


class settings:
    _profiles = {}
    default_max_examples = 100

    def __init__(self, parent=None, **kwargs):
        self.values = dict(parent.values) if isinstance(parent, settings) else {}
        self.values.update(kwargs)

    @property
    def max_examples(self):
        return self.values.get("max_examples", settings.default_max_examples)

    def __call__(self, fn):
        test = marked(fn)
        test.settings = self
        return test

    @classmethod
    def register_profile(cls, name, parent=None, **kwargs):
        cls._profiles[name] = settings(parent, **kwargs)

    @classmethod
    def load_profile(cls, name):
        return None

    @classmethod
    def get_profile(cls, name):
        return cls._profiles[name]


def given(*args, **kwargs):
    def decorate(fn):
        test = marked(fn)
        test.given_args = args
        test.given_kwargs = kwargs
        return test

    return decorate


def example(*args, **kwargs):
    def decorate(fn):
        test = marked(fn)
        test.examples.append((args, kwargs))
        return test

    return decorate


def assume(condition):
    if not condition:
        raise Unsatisfied("assume")
    return True


def reject():
    raise Unsatisfied("reject")


def note(value):
    return None


def _seed_of(text, seed, index):
    h = (seed * 1000003 + 2166136261) & 0xFFFFFFFF
    for ch in text:
        h = ((h ^ ord(ch)) * 16777619) & 0xFFFFFFFF
    return (h * 2654435761 + index * 40503 + 1) & 0xFFFFFFFF


def run_given(case, kwargs, seed, signatures):
    """Run one collected ``@given`` case on its examples; raises on the first failure."""
    test = case.test
    if not isinstance(test, Marked):
        raise TypeError("not a @given test")
    wanted = signatures.get(case.name, [])
    positional = list(test.given_args or ())
    names = [n for n in wanted if n not in kwargs and n not in (test.given_kwargs or {})]
    if len(positional) > len(names):
        raise TypeError("@given has more positional strategies than the test has arguments")
    targets = names[len(names) - len(positional) :] if positional else []
    strats = dict(test.given_kwargs or {})
    for name, strat in zip(targets, positional):
        strats[name] = strat
    for args, extra in test.examples:
        call = dict(kwargs)
        call.update(zip(targets, args))
        call.update(extra)
        test.fn(**call)
    limit = test.settings.max_examples if test.settings is not None else settings().max_examples
    ran = 0
    tries = 0
    keys = sorted(strats)
    while ran < limit:
        tries += 1
        if tries > limit * 10 + 100:
            raise Unsatisfied("only " + str(ran) + " of " + str(limit) + " examples satisfied")
        rnd = Random(_seed_of(case.id, seed, tries))
        call = dict(kwargs)
        try:
            for key in keys:
                call[key] = rnd.draw(strats[key])
        except Unsatisfied:
            continue
        try:
            test.fn(**call)
        except Unsatisfied:
            continue
        except Skipped:
            raise
        except BaseException as exc:  # noqa: B036 - report it with its example
            shown = ", ".join(k + "=" + _short(call[k]) for k in keys)
            raise Failed(
                "Falsifying example #"
                + str(tries)
                + " (seed "
                + str(seed)
                + "): "
                + shown
                + "\n"
                + describe(exc)
            ) from None
        ran += 1


def _short(value):
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."
