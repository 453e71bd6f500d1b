"""YAML configuration -> validated, frozen `model.Config`.

The only module that imports `yaml`: it reads the file into a tree of values with
their key paths and lines, bounded (size, depth, aliases, tags); `configread` builds
the configuration from that tree. Parsing is strict: unknown keys, wrong types,
duplicate keys and impossible combinations are collected and reported together,
each with its key path and line, as one `ConfigError` (exit 78).

Side effects: reads the configuration file (and EAB key files it names).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from . import configread, configspec, trust
from .configkinds import Checker, Value
from .errors import ConfigError, ConfigProblem
from .model import Config

DEFAULT_PATH = Path("/etc/certagent/certagent.yaml")
ENV_VAR = "CERTAGENT_CONFIG"


def default_path(explicit: str | None, environ: dict[str, str]) -> Path:
    """`-c` wins, then $CERTAGENT_CONFIG, then the system default."""
    if explicit:
        return Path(explicit)
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR])
    return DEFAULT_PATH


# Limits that make the loader unable to hang or exhaust memory on any input: a real
# configuration is a few KB deep in a handful of levels.
MAX_BYTES = 1 << 20  # the configuration file
MAX_DEPTH = 32  # nesting of mappings and lists
MAX_VALUES = 20_000  # values built through aliases (a "billion laughs" stops here)
_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "timestamp")}
_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_STR = "tag:yaml.org,2002:str"
# libyaml's parser when PyYAML was built with it (PyPI's wheels are): ~10x faster, and its
# event parser is iterative, so the depth check below reads any input without recursing.
_FAST: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _libyaml_version() -> tuple[int, ...]:
    try:
        return tuple(yaml._yaml.get_version())
    except AttributeError:
        return ()


# libyaml from 0.2.5 refuses nesting past 1000 levels itself, so composing cannot recurse
# without bound and the depth is checked while the tree is built (one pass, not two).
_BOUNDED = _FAST is not yaml.SafeLoader and _libyaml_version() >= (0, 2, 5)


def load(path: Path) -> Config:
    """The configuration in `path` (and its parts), which only root or certagent's own
    user may be able to change (trust.py): its hooks run as root."""
    signed: list[str] = []
    try:
        text = trust.read_file(path, MAX_BYTES, signed=signed).decode("utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [ConfigProblem("", f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [ConfigProblem("", "not UTF-8 text")]) from exc
    except ValueError as exc:
        raise ConfigError(str(path), [ConfigProblem("", str(exc))]) from exc
    return parse(text, path, signed)


def parse(text: str, source: Path, signed: list[str] | None = None) -> Config:
    """`signed`: the main file as read (trust.signature), when it was read from one;
    the configuration's `inputs` then name every file it was read from."""
    ctx = _Ctx(source)
    ctx.signed = signed
    try:
        root = _tree(ctx, text)
    except _Problem as exc:
        raise ConfigError(str(source), [exc.problem]) from None
    if not _assemble(ctx, root, source):
        raise _refused(ctx, source)
    config = configread.read(ctx, root)
    if ctx.problems or config is None:
        raise _refused(ctx, source)
    if signed is None:
        return config
    from . import __version__

    key = "\n".join([__version__, str(os.geteuid()), *signed]).encode()
    return replace(config, inputs=hashlib.sha256(key).hexdigest())


def _refused(ctx: _Ctx, source: Path) -> ConfigError:
    """Every problem found, once each (a `defaults` key read in every certificate says
    its problem once), by file and line."""
    problems = list(dict.fromkeys(ctx.problems))
    return ConfigError(str(source), sorted(problems, key=lambda p: (p.file or "", p.line or 0)))


class _Problem(Exception):
    def __init__(self, problem: ConfigProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _tree(ctx: _Ctx, text: str, part: str | None = None, base: str = "") -> Value:
    """One document as a tree of values with positions; _Problem when it cannot be read
    safely (`part`: the file it is, when not the main one; `base`: the path its top
    level has in the whole configuration)."""
    ctx.file = part
    # each document is bounded on its own; its nodes live while it is built, so their
    # ids name them (never an earlier document's, which may be freed and reused)
    ctx.values, ctx._built = 0, set()
    try:
        if "\0" in text:
            at = text[: text.index("\0")].count("\n") + 1
            raise _Refused("the file contains a NUL byte", at)
        if not _BOUNDED:
            _check_shape(text)
        node = yaml.compose(text, Loader=_FAST)
        if node is None:
            raise _Refused("the file is empty")
        return ctx.value(node, base)  # `node` holds the document while it is built
    except _Refused as exc:
        raise _Problem(ConfigProblem(exc.path, exc.message, exc.line, part)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        if "maximum nesting depth" in problem:  # libyaml's own limit (1000 levels)
            problem = f"nested deeper than {MAX_DEPTH} levels"
        raise _Problem(ConfigProblem("", f"invalid YAML: {problem}", line, part)) from exc
    finally:
        ctx.file = None


def _assemble(ctx: _Ctx, root: Value, source: Path) -> bool:
    """The configuration in parts made one: the certificates of every `*.yaml` under
    `certificates_dir` beside those of the main file, then `defaults` under each.
    False when there are too many certificates to read one by one (refused whole)."""
    top = root.value
    if not isinstance(top, dict):
        return True
    folder = top.get("certificates_dir")
    if folder is not None and isinstance(folder.value, str):
        _parts(ctx, top, folder, source.parent / folder.value)
    defaults, certs = top.get("defaults"), top.get("certificates")
    many = len(certs.value) if certs is not None and isinstance(certs.value, dict) else 0
    if certs is not None and many > configspec.MAX_CERTIFICATES:  # refused whole, unread
        ctx.error(certs, f"{many} certificates (with those of certificates_dir): at most "
                  f"{configspec.MAX_CERTIFICATES}")  # fmt: skip
        return False
    if defaults is None or certs is None or not isinstance(certs.value, dict):
        return True
    if not isinstance(defaults.value, dict):
        return True  # said by the section's reader
    for name, cert in certs.value.items():
        certs.value[name] = _merged(defaults, cert)
    return True


def _parts(ctx: _Ctx, top: dict[str, Value], at: Value, folder: Path) -> None:
    try:
        if ctx.signed is not None:  # before it is listed: a part added later changes it
            ctx.signed.append(trust.signature(str(folder), folder.stat()))
        # every *.yaml but a folder: a part that is a dangling link or a FIFO is said,
        # never silently left out with its certificates
        files = sorted(p for p in folder.glob("*.yaml") if not p.is_dir())
    except OSError as exc:
        ctx.error(at, f"cannot read {folder}: {exc.strerror}")
        return
    if not folder.is_dir():
        ctx.error(at, f"no such directory: {folder}")
        return
    if len(files) > configspec.MAX_PARTS:
        ctx.error(at, f"{len(files)} files under {folder}: at most {configspec.MAX_PARTS}")
        return
    unsafe = trust.problem(folder)
    if unsafe is not None:  # anyone who can add a file there could add a hook
        ctx.error(at, f"{unsafe}: its parts' hooks would run as root")
        return
    certs = top.get("certificates")
    if certs is None or not isinstance(certs.value, dict):
        if certs is not None:
            return  # the main file's `certificates` is wrong: said by its reader
        certs = top["certificates"] = Value({}, "certificates", at.line)
    defined: dict[str, tuple[str | None, int]] = {n: (None, v.line) for n, v in certs.value.items()}
    budget = configspec.MAX_PARTS_BYTES  # what the parts may still hold, together
    for path in files:
        try:
            data = trust.read_file(path, MAX_BYTES, signed=ctx.signed)
            budget -= len(data)
            if budget < 0:
                ctx.error(at, f"the files under {folder} hold more than "
                          f"{configspec.MAX_PARTS_BYTES // 2**20} MiB together")  # fmt: skip
                return
            text = data.decode("utf-8")
            tree = _tree(ctx, text, str(path), "certificates")  # its values where they go
        except OSError as exc:
            why = f"cannot read: {exc.strerror or exc}"
            ctx.problems.append(ConfigProblem("", why, None, str(path)))
            continue
        except UnicodeDecodeError:
            ctx.problems.append(ConfigProblem("", "not UTF-8 text", None, str(path)))
            continue
        except ValueError as exc:  # too large, or others could change it (trust.py)
            ctx.problems.append(ConfigProblem("", str(exc), None, str(path)))
            continue
        except _Problem as exc:
            ctx.problems.append(exc.problem)
            continue
        if not isinstance(tree.value, dict):
            ctx.error(tree, "expected a mapping of certificate names to certificates")
            continue
        for name, cert in tree.value.items():
            if name in defined:
                where, line = defined[name]
                ctx.error(cert, f"certificate {name} is also defined in "
                          f"{where or 'the main file'} (line {line})")  # fmt: skip
                continue
            defined[name] = (str(path), cert.line)
            certs.value[name] = cert


def _merged(defaults: Value, cert: Value) -> Value:
    """`cert` with every key of `defaults` it does not set; mappings merged key by key.
    A default keeps its own path and line, so an error in it names `defaults`."""
    if not isinstance(cert.value, dict) or not isinstance(defaults.value, dict):
        return cert
    out = dict(cert.value)
    for key, value in defaults.value.items():
        if key not in out:
            out[key] = value
        elif isinstance(out[key].value, dict) and isinstance(value.value, dict):
            out[key] = _merged(value, out[key])
    return Value(out, cert.path, cert.line, cert.file)


# -- the YAML tree with positions -------------------------------------------------


class _Refused(Exception):
    """The document is unsafe to read any further (too deep, too big, a bad tag)."""

    def __init__(self, message: str, line: int | None = None, path: str = "") -> None:
        super().__init__(message)
        self.message, self.line, self.path = message, line, path


def _check_shape(text: str) -> None:
    """Refuse over-deep nesting from the event stream, before composing: without libyaml
    (or an old one), the composer recurses once per level without a bound."""
    depth = 0
    for event in yaml.parse(text, Loader=_FAST):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                line = mark.line + 1 if mark is not None else None
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", line)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


@dataclass
class _Ctx(Checker):
    """Builds the YAML tree with positions, and collects problems."""

    values: int = 0  # values built again through an alias (a "billion laughs" stops here)
    file: str | None = None  # the part being read; None: the main file
    _active: set[int] = field(default_factory=set)  # nodes on the path being built
    _built: set[int] = field(default_factory=set)  # nodes built once: a visit again is an alias
    _aliased: int = 0  # > 0 while an alias is being expanded
    signed: list[str] | None = None  # the files read, as read (None: not from a file)
    _loader: yaml.SafeLoader = field(default_factory=lambda: yaml.SafeLoader(""))

    def value(self, node: yaml.Node, path: str, depth: int = 0) -> Value:
        """Build the tree with positions. Aliases are expanded, but a self-referencing
        alias, an expansion past MAX_VALUES, nesting past MAX_DEPTH and any tag beyond
        plain YAML are refused."""
        line = node.start_mark.line + 1
        if id(node) in self._active:
            raise _Refused("an alias refers to a value that contains it", line, path)
        again = id(node) in self._built  # a node seen before: this visit is an alias's
        self._aliased += again
        try:
            return self._value(node, path, depth, line)
        finally:
            self._aliased -= again
            self._built.add(id(node))

    def _value(self, node: yaml.Node, path: str, depth: int, line: int) -> Value:
        if self._aliased:  # what the file spells out is bounded by its size; aliases are not
            self.values += 1
            if self.values > MAX_VALUES:
                raise _Refused(
                    f"more than {MAX_VALUES} values through aliases (an alias bomb?)", line, path
                )
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if depth >= MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", line, path)
            if node.tag not in _COLLECTION_TAGS:
                raise _Refused(f"unsupported YAML tag {node.tag}", line, path)
            self._active.add(id(node))
            try:
                return Value(self._collection(node, path, depth + 1), path, line, self.file)
            finally:
                self._active.discard(id(node))
        if node.tag == _STR:  # most values: the text itself, as the constructor gives it
            return Value(node.value, path, line, self.file)
        if node.tag not in _TAGS:
            raise _Refused(f"unsupported YAML tag {node.tag}", line, path)
        try:
            return Value(self._loader.construct_object(node, deep=True), path, line, self.file)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            text = str(node.value)[:40]
            why = str(exc).split(":")[0]  # e.g. "Exceeds the limit (4300 digits) ..."
            raise _Refused(f"unreadable value {text!r}: {why}", line, path) from None

    def _collection(self, node: yaml.Node, path: str, depth: int) -> dict[str, Value] | list[Value]:
        if isinstance(node, yaml.SequenceNode):
            return [self.value(n, f"{path}[{i}]", depth) for i, n in enumerate(node.value)]
        out: dict[str, Value] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise _Refused("a key must be a plain word", knode.start_mark.line + 1, path)
            key = str(knode.value)
            sub = f"{path}.{key}" if path else key
            if key in out:  # the last one is read: say where the first was
                why = f"duplicate key (also at line {out[key].line}; only this one is read)"
                self.error(sub, why, knode.start_mark.line + 1)
            out[key] = self.value(vnode, sub, depth)
        return out
