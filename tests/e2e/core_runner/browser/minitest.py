# ruff: noqa: B905 - MicroPython's zip() takes no strict= (this file runs there)
"""A small pytest for the browser: collects and runs test modules on MicroPython and Pyodide.

It supports what tests/unit/core uses, with pytest's semantics: ``test*`` functions,
``pytest.mark.parametrize`` (stacked, ``ids``, ``pytest.param``), ``skip``/``skipif``/
``xfail`` marks (strict, as in pyproject.toml), module-level ``pytestmark``,
``pytest.raises``/``fail``/``skip``/``approx``, function- and module-scoped fixtures (plain and
``yield``), and hypothesis ``@given`` tests (see shim/hypothesis).

MicroPython cannot set attributes on functions and has no ``inspect.signature``, so marks
wrap the function in a ``Marked`` object, and argument names come from the module's source.

Everything here is plain Python that also runs on CPython (no ``js``, no ``pyscript``).
"""

import sys
import time

PASSED = "passed"
FAILED = "failed"
ERROR = "error"
SKIPPED = "skipped"
XFAILED = "xfailed"
DESELECTED = "deselected"


class Failed(BaseException):
    """Raised by ``pytest.fail`` and by a ``pytest.raises`` block that did not raise."""


class Skipped(BaseException):
    """Raised by ``pytest.skip``."""


class Unsatisfied(Exception):
    """An example hypothesis must discard (``assume(False)``, a filter that never passed)."""


class Marked:
    """A test function with what its decorators said about it."""

    def __init__(self, fn):
        self.fn = fn
        self.params = []  # [(names, values, ids, marks)], innermost decorator first
        self.marks = []  # [(name, args, kwargs)]
        self.given_args = None
        self.given_kwargs = None
        self.settings = None
        self.examples = []

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def marked(obj):
    return obj if isinstance(obj, Marked) else Marked(obj)


class Param:
    def __init__(self, values, id=None, marks=()):
        self.values = values
        self.id = id
        self.marks = marks if isinstance(marks, (list, tuple)) else (marks,)


class Mark:
    """``pytest.mark.NAME(*args, **kwargs)``: a decorator (and a value for ``marks=``)."""

    def __init__(self, name, args=(), kwargs=None):
        self.name = name
        self.args = args
        self.kwargs = kwargs or {}

    def __call__(self, *args, **kwargs):
        if self.args or self.kwargs:  # configured already: this call decorates
            return self._apply(args[0])
        if not kwargs and len(args) == 1 and callable(args[0]):
            return self._apply(args[0])  # bare @pytest.mark.skip
        return Mark(self.name, args, kwargs)

    def _apply(self, fn):
        test = marked(fn)
        if self.name == "parametrize":
            names, values = self.args[0], self.args[1]
            test.params.append((_names(names), list(values), self.kwargs.get("ids"), ()))
        else:
            test.marks.append((self.name, self.args, self.kwargs))
        return test


class Marks:
    parametrize = Mark("parametrize")
    skip = Mark("skip")
    skipif = Mark("skipif")
    xfail = Mark("xfail")
    usefixtures = Mark("usefixtures")
    timeout = Mark("timeout")
    e2e = Mark("e2e")

    def __getattr__(self, name):
        return Mark(name)


def _names(names):
    if isinstance(names, str):
        return tuple(n.strip() for n in names.split(",") if n.strip())
    return tuple(names)


# -- raises, fail, skip, approx ------------------------------------------------------------


class ExceptionInfo:
    def __init__(self, expected):
        self.expected = expected
        self.value = None
        self.type = None

    def match(self, pattern):
        import re

        if not re.search(pattern, str(self.value)):
            raise AssertionError(
                "pattern " + repr(pattern) + " not found in " + repr(str(self.value))
            )
        return True

    def __repr__(self):
        return "<ExceptionInfo " + repr(self.value) + ">"


class RaisesContext:
    def __init__(self, expected, match):
        self.info = ExceptionInfo(expected)
        self.match_expr = match

    def __enter__(self):
        return self.info

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            raise Failed("DID NOT RAISE " + _exc_name(self.info.expected))
        if exc is None or not isinstance(exc, self.info.expected):
            return False  # a different exception: let it through, as pytest does
        self.info.value = exc
        self.info.type = type(exc)
        if self.match_expr is not None:
            self.info.match(self.match_expr)
        return True


def _exc_name(expected):
    if isinstance(expected, tuple):
        return "(" + ", ".join(e.__name__ for e in expected) + ")"
    return expected.__name__


def raises(expected, *args, **kwargs):
    match = kwargs.pop("match", None)
    if not args:
        return RaisesContext(expected, match)
    ctx = RaisesContext(expected, match)
    try:
        args[0](*args[1:], **kwargs)
    except BaseException as exc:  # noqa: B036 - judged below, like pytest.raises
        if not ctx.__exit__(type(exc), exc, None):
            raise
        return ctx.info
    raise Failed("DID NOT RAISE " + _exc_name(expected))


def fail(reason="", pytrace=True):
    raise Failed(reason)


def skip(reason=""):
    raise Skipped(reason)


class approx:
    def __init__(self, expected, rel=None, abs=None):
        self.expected = expected
        self.rel = 1e-6 if rel is None else rel
        self.abs = 1e-12 if abs is None else abs

    def _close(self, want, got):
        if isinstance(want, dict):
            if not isinstance(got, dict) or set(want) != set(got):
                return False
            return all(self._close(want[k], got[k]) for k in want)
        if isinstance(want, (list, tuple)):
            if not isinstance(got, (list, tuple)) or len(want) != len(got):
                return False
            return all(self._close(w, g) for w, g in zip(want, got))
        if isinstance(want, bool) or not isinstance(want, (int, float)):
            return want == got
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return False
        if want == got:
            return True
        if want != want:  # NaN never matches (nan_ok is not supported)
            return False
        tolerance = max(self.rel * _abs(want), self.abs)
        return _abs(want - got) <= tolerance

    def __eq__(self, other):
        return self._close(self.expected, other)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "approx(" + repr(self.expected) + ")"


def _abs(x):
    return -x if x < 0 else x


# -- fixtures ------------------------------------------------------------------------------


class Fixture:
    def __init__(self, fn, scope="function", name=None):
        self.fn = fn
        self.scope = scope
        self.name = name


def fixture(fn=None, scope="function", name=None, autouse=False, params=None):
    if params is not None or autouse:
        raise NotImplementedError("minitest fixtures: params= and autouse= are not supported")
    if fn is None:
        return lambda f: Fixture(f, scope, name)
    return Fixture(fn, scope, name)


def parse_signatures(source):
    """``{function name: [argument names]}`` for every ``def`` at the start of a line."""
    out = {}
    lines = source.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("def ") or line.startswith("async def "):
            head = line
            while ")" not in _strip_brackets(head) and i + 1 < len(lines):
                i += 1
                head += " " + lines[i]
            name = head.split("def ", 1)[1].split("(", 1)[0].strip()
            out[name] = _arg_names(head.split("(", 1)[1])
        i += 1
    return out


def _strip_brackets(text):
    """``text`` up to where its first ``(`` is closed, with nested brackets removed."""
    depth = 0
    out = ""
    for ch in text:
        if ch in "([{":
            depth += 1
            if depth == 1 and ch == "(":
                continue
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return out + ")"
        if depth == 1:
            out += ch
    return out


def _arg_names(after_paren):
    inner = _strip_brackets("(" + after_paren)[:-1]
    names = []
    for part in inner.split(","):
        part = part.strip()
        if not part or part in ("*", "/") or part.startswith("*"):
            continue
        name = part.split(":", 1)[0].split("=", 1)[0].strip()
        if name:
            names.append(name)
    return names


# -- collection ----------------------------------------------------------------------------


class Case:
    """One collected test: a function with one combination of its parameters."""

    def __init__(self, module, name, test, kwargs, ids, marks):
        self.module = module
        self.name = name
        self.test = test  # a Marked
        self.kwargs = kwargs
        self.id = module + "::" + name + ("[" + "-".join(ids) + "]" if ids else "")
        self.marks = marks


def _idval(value, name, index):
    if isinstance(value, str):
        out = ""
        for ch in value:
            code = ord(ch)
            if 32 <= code < 127:
                out += ch
            elif code < 256:
                out += f"\\x{code:02x}"
            elif code < 0x10000:
                out += f"\\u{code:04x}"
            else:
                out += f"\\U{code:08x}"
        return out
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    return name + str(index)


def _expand(test):
    """``[(kwargs, ids, marks)]`` for every parameter combination, in pytest's order."""
    combos = [({}, [], [])]
    for names, values, ids, _ in test.params:
        out = []
        for kwargs, id_parts, marks in combos:
            for index, raw in enumerate(values):
                extra = []
                pid = None
                if isinstance(raw, Param):
                    pid, extra, raw = raw.id, list(raw.marks), raw.values
                elif len(names) == 1:
                    raw = (raw,)
                if len(raw) != len(names):
                    raise TypeError("parametrize: " + repr(raw) + " does not match " + repr(names))
                if pid is None and ids is not None:
                    pid = ids(raw[0] if len(names) == 1 else raw) if callable(ids) else ids[index]
                if pid is None:
                    pid = "-".join(_idval(v, n, index) for n, v in zip(names, raw))
                new = dict(kwargs)
                for n, v in zip(names, raw):
                    new[n] = v
                out.append((new, id_parts + [str(pid)], marks + extra))
        combos = out
    # pytest lists the combinations with the outermost decorator varying fastest.
    if len(test.params) > 1:
        combos.sort(key=lambda c: _order_key(test, c[0]))
    return combos


def _order_key(test, kwargs):
    key = []
    for names, values, _, _ in test.params:
        for index, raw in enumerate(values):
            raw_values = raw.values if isinstance(raw, Param) else raw
            if len(names) == 1:
                raw_values = (raw_values,)
            if all(_same(kwargs[n], v) for n, v in zip(names, raw_values)):
                key.append(index)
                break
    return key


def _same(a, b):
    return a is b or (type(a) is type(b) and a == b)


def collect(module_name, namespace, source):
    """The cases of one imported module, in definition order (by source line)."""
    signatures = parse_signatures(source)
    order = {}
    for lineno, line in enumerate(source.split("\n")):
        if line.startswith("def "):
            order.setdefault(line[4:].split("(", 1)[0].strip(), lineno)
    module_marks = namespace.get("pytestmark", [])
    if not isinstance(module_marks, (list, tuple)):
        module_marks = [module_marks]
    names = [n for n in namespace if n.startswith("test") and callable(namespace[n])]
    names = [n for n in names if not isinstance(namespace[n], type)]
    names.sort(key=lambda n: order.get(n, 1 << 30))
    cases = []
    for name in names:
        test = marked(namespace[name])
        marks = [(m.name, m.args, m.kwargs) for m in module_marks] + test.marks
        for kwargs, ids, extra in _expand(test):
            all_marks = marks + [(m.name, m.args, m.kwargs) for m in extra]
            cases.append(Case(module_name, name, test, kwargs, ids, all_marks))
    return cases, signatures


# -- running -------------------------------------------------------------------------------


class Runner:
    def __init__(self, seed=0):
        self.seed = seed
        self.module_fixtures = {}  # name -> value, for the module being run
        self.module_teardowns = []

    def run_case(self, case, namespace, signatures):
        """``(outcome, detail)`` for one case."""
        for name, args, kwargs in case.marks:
            if name == "skip":
                return SKIPPED, kwargs.get("reason", args[0] if args else "")
            if name == "skipif" and args and args[0]:
                return SKIPPED, kwargs.get("reason", "")
        xfail = [m for m in case.marks if m[0] == "xfail" and (not m[1] or m[1][0])]
        teardowns = []
        try:
            try:
                kwargs = self._arguments(case, namespace, signatures, teardowns)
                if case.test.given_args is not None or case.test.given_kwargs is not None:
                    import hypothesis

                    hypothesis.run_given(case, kwargs, self.seed, signatures)
                else:
                    case.test.fn(**kwargs)
            finally:
                for finish in reversed(teardowns):
                    finish()
        except Skipped as exc:
            return SKIPPED, str(exc)
        except (Exception, Failed) as exc:  # noqa: B036 - every failure is reported
            if xfail:
                return XFAILED, describe(exc)
            return FAILED, describe(exc)
        if xfail:
            return FAILED, "[XPASS(strict)] " + str(xfail[0][2].get("reason", ""))
        return PASSED, ""

    def _arguments(self, case, namespace, signatures, teardowns):
        kwargs = dict(case.kwargs)
        wanted = signatures.get(case.name, list(kwargs))
        given = case.test.given_kwargs or {}
        positional = len(case.test.given_args or ())
        free = [n for n in wanted if n not in kwargs and n not in given]
        if positional:
            free = free[: len(free) - positional]
        for name in free:
            kwargs[name] = self._fixture(name, namespace, signatures, teardowns, [])
        return kwargs

    def _fixture(self, name, namespace, signatures, teardowns, stack):
        if name in self.module_fixtures:
            return self.module_fixtures[name]
        fix = None
        for value in namespace.values():
            if isinstance(value, Fixture) and (value.name or value.fn.__name__) == name:
                fix = value
        if fix is None:
            raise LookupError("fixture '" + name + "' not found")
        if name in stack:
            raise LookupError("fixture '" + name + "' requests itself")
        fn_name = fix.fn.__name__
        args = {}
        own = teardowns if fix.scope == "function" else self.module_teardowns
        for arg in signatures.get(fn_name, []):
            args[arg] = self._fixture(arg, namespace, signatures, own, stack + [name])
        result = fix.fn(**args)
        if _is_generator(result):
            value = next(result)
            own.append(lambda: _finish(result))
        else:
            value = result
        if fix.scope != "function":
            self.module_fixtures[name] = value
        return value

    def end_module(self):
        for finish in reversed(self.module_teardowns):
            finish()
        self.module_fixtures = {}
        self.module_teardowns = []


def _is_generator(value):
    return type(value).__name__ == "generator"


def _finish(gen):
    try:
        next(gen)
    except StopIteration:
        return
    raise RuntimeError("fixture did not stop after its yield")


def describe(exc):
    """Exception type, message and traceback, as text (both interpreters)."""
    try:
        import traceback

        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
    except ImportError:
        import io

        buf = io.StringIO()
        sys.print_exception(exc, buf)  # MicroPython
        return buf.getvalue()[-4000:]


def now_ms():
    if hasattr(time, "ticks_ms"):
        return time.ticks_ms()
    return int(time.time() * 1000)


def run_suite(modules, seed=0, on_module=None):
    """Import and run ``modules`` ({name: source}, in that order); the report as plain data.

    ``{"tests": [[id, outcome, detail, ms]], "modules": {name: {"error": text|None,
    "cases": n, "ms": n}}, "functions": {"module::function": cases}, "counts": {outcome: n}}``.
    """
    report = new_report()
    for _ in iter_suite(report, list(modules), modules, seed, on_module):
        pass
    return report


def new_report():
    return {"tests": [], "modules": {}, "functions": {}, "counts": {}}


def iter_suite(report, order, sources, seed=0, on_module=None, on_case=None, deselect=None):
    """Run the modules named in ``order`` into ``report``, yielding after every test (so a
    browser page can breathe between them).  ``deselect``: {test id: reason} not to run
    (they would kill the interpreter), reported as ``deselected``."""
    runner = Runner(seed)
    for module_name in order:
        start = now_ms()
        entry = {"error": None, "cases": 0, "ms": 0}
        report["modules"][module_name] = entry
        try:
            module = __import__(module_name)
            cases, signatures = collect(module_name, module.__dict__, sources[module_name])
        except BaseException as exc:  # noqa: B036 - a module that cannot load is an error
            entry["error"] = describe(exc)
            report["tests"].append([module_name, ERROR, entry["error"], 0])
            _count(report, ERROR)
            continue
        entry["cases"] = len(cases)
        for case in cases:
            key = module_name + "::" + case.name
            report["functions"][key] = report["functions"].get(key, 0) + 1
            if on_case is not None:
                on_case(case)
            began = now_ms()
            if deselect and case.id in deselect:
                outcome, detail = DESELECTED, deselect[case.id]
            else:
                outcome, detail = runner.run_case(case, module.__dict__, signatures)
            report["tests"].append([case.id, outcome, detail, now_ms() - began])
            _count(report, outcome)
            yield case
        try:
            runner.end_module()
        except Exception as exc:
            report["tests"].append([module_name + "::<teardown>", ERROR, describe(exc), 0])
            _count(report, ERROR)
        entry["ms"] = now_ms() - start
        if on_module is not None:
            on_module(module_name, entry)


def _count(report, outcome):
    report["counts"][outcome] = report["counts"].get(outcome, 0) + 1
