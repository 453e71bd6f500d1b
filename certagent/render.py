"""Jinja2 rendering of web-server configs: the only module that imports `jinja2`.

StrictUndefined: a missing variable is an error naming the template and line,
never an empty string in a live config.

Side effects: reads template files. jinja2 is imported on first use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2
from . import trust
from .errors import CertagentError


class RenderError(CertagentError):
    """A template is missing, malformed, or uses an undefined variable."""


ETC_TEMPLATES = Path("/etc/certagent/templates")


def shipped_template_dir() -> Path:
    """The templates the wheel carries (certagent/templates), else a checkout's."""
    packaged = Path(__file__).resolve().parent / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "templates"


def search_path(user_dirs: Sequence[Path]) -> list[Path]:
    """Where templates are looked up, in order: `template_dirs`, then
    /etc/certagent/templates (when it exists), then the shipped ones."""
    etc = [ETC_TEMPLATES] if ETC_TEMPLATES.is_dir() and ETC_TEMPLATES not in user_dirs else []
    return [*user_dirs, *etc, shipped_template_dir()]


def _environment(user_dirs: Sequence[Path]) -> jinja2.Environment:
    """A sandboxed environment: a template can reach no Python internals (attributes
    starting with `_`, unsafe callables), so a template is a config, never a program."""
    import jinja2  # deferred: status and --help stay light
    from jinja2.sandbox import SandboxedEnvironment

    search = search_path(user_dirs)
    for folder in search[:-1]:  # the shipped ones are part of the installed code itself
        why = trust.problem(folder)
        if why is not None:  # a template another user can change is a root-run config
            raise RenderError(f"refusing templates from {folder}: {why}")
    key = tuple(str(p) for p in search)
    env = _ENVIRONMENTS.get(key)
    if env is None:  # one per search path and process: a template is compiled once
        env = _ENVIRONMENTS[key] = SandboxedEnvironment(  # configs, not HTML: no autoescape
            loader=_loader(list(key)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=True,  # a template is read again on every use (_loader_class)
        )
    return env


# Environments by search path. jinja2 keeps each one's compiled templates, so 100
# certificates sharing a template compile it once; the loader says a compiled template
# is up to date only while its file says the same, so an edit is always seen.
_ENVIRONMENTS: dict[tuple[str, ...], jinja2.Environment] = {}


@functools.cache
def _loader_class() -> type[jinja2.FileSystemLoader]:
    import jinja2

    class Loader(jinja2.FileSystemLoader):
        """A FileSystemLoader whose compiled templates are reused only while the file's
        text is the same (not its mtime, which ticks coarsely)."""

        def get_source(
            self, environment: jinja2.Environment, template: str
        ) -> tuple[str, str, Callable[[], bool]]:
            source, filename, _ = super().get_source(environment, template)

            def uptodate() -> bool:
                try:
                    return Path(filename).read_text(encoding=self.encoding) == source
                except (OSError, ValueError):
                    return False

            return source, filename, uptodate

    return Loader


def _loader(paths: list[str]) -> jinja2.FileSystemLoader:
    return _loader_class()(paths)


def sources(template: str, user_dirs: Sequence[Path] = ()) -> dict[str, str]:
    """The source of a template and of every template it includes, imports or extends
    (found by parsing, recursively), keyed by name: what a rendering depends on."""
    import jinja2
    from jinja2 import meta

    env = _environment(user_dirs)
    found: dict[str, str] = {}
    todo = [template]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        try:
            source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
            found[name] = source
            refs = meta.find_referenced_templates(env.parse(source))
        except jinja2.TemplateNotFound as exc:
            raise RenderError(f"template {name} not found") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"template {name} line {exc.lineno}: {exc.message}") from exc
        todo += [r for r in refs if r is not None]  # None: a name computed at render time
    return found


def render(template: str, context: Mapping[str, Any], user_dirs: Sequence[Path] = ()) -> str:
    """Render one template; user directories are searched before the shipped ones."""
    import jinja2
    import jinja2.exceptions

    env = _environment(user_dirs)
    try:
        return env.get_template(template).render(**context)
    except jinja2.TemplateNotFound as exc:
        searched = ", ".join(map(str, search_path(user_dirs)))
        raise RenderError(f"template {template} not found (searched {searched})") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(
            f"template {exc.filename or template} line {exc.lineno}: {exc.message}"
        ) from exc
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, template)
        raise RenderError(f"template {template}{line}: {exc.message}") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise RenderError(f"template {template}: refused by the sandbox: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise RenderError(f"template {template}: {exc}") from exc


def _template_line(exc: BaseException, template: str) -> str:
    """The template line where rendering failed, from the traceback jinja2 rewrites."""
    tb = exc.__traceback__
    line = ""
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(template):
            line = f" line {tb.tb_lineno}"
        tb = tb.tb_next
    return line
