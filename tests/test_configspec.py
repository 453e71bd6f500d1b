"""Unit: the configuration is described once (certagent/configspec/), and the loader,
the shipped JSON Schema and docs/configuration.md all come from that description
(issue #13): the generated files are current, every section has its table, and for
every key the loader and the schema accept and refuse the same values."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from certagent import cli, cliparser, config, configspec, manpage
from certagent.configkinds import (
    Either,
    Group,
    Kind,
    ListOf,
    MapOf,
    SecretFile,
    Section,
    User,
)
from certagent.errors import ConfigError
from certagent.model import Keepalived, Monitor, Peer, Policy, Staging

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "certagent" / "schemas" / "config.schema.json"
DOCS = ROOT / "docs" / "configuration.md"


def test_the_shipped_schema_is_generated_from_the_description() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == configspec.json_schema(), "stale: run `make docs`"


def test_the_man_page_is_generated_from_the_parser() -> None:
    man = (ROOT / "contrib" / "man" / "certagent.1").read_text()
    assert man == manpage.render(cliparser.build_parser(), cliparser.EPILOG), (
        "stale: run `make docs`"
    )
    for command in ("renew", "plan", "check", "health", "rollback", "account rollover",
                    "config validate", "config schema", "import"):  # fmt: skip
        assert f".SS {command}" in man, command


def test_config_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == configspec.json_schema()


def test_the_reference_tables_are_generated_from_the_description() -> None:
    text = DOCS.read_text()
    assert configspec.render_docs(text) == text, "stale: run `make docs`"


def _sections(node: Kind[Any], path: str) -> Iterator[str]:
    if isinstance(node, Either):
        node = node.other
    if isinstance(node, ListOf) and isinstance(node.item, Section):
        yield from _sections(node.item, f"{path}[]")
    elif isinstance(node, MapOf):
        yield from _sections(node.item, f"{path}.*")
    elif isinstance(node, Section):
        yield path
        for key in node.keys.values():
            yield from _sections(key.kind, f"{path}.{key.name}" if path else key.name)


def test_every_section_has_its_table() -> None:
    text = DOCS.read_text()
    marked = set(re.findall(r"<!-- table: (\S+) -->", text))
    tabled = {
        id(configspec.section("" if p == "top" else p)) for p in marked - {"command", "endpoint"}
    }
    for path in _sections(configspec.TOP, ""):
        assert id(configspec.section(path)) in tabled, f"no table for {path or 'top'}"
    assert {"command", "endpoint"} <= marked


def test_model_defaults_are_the_described_defaults() -> None:
    for section, model in (
        (configspec.POLICY, Policy()),
        (configspec.MONITOR, Monitor()),
        (configspec.STAGING, Staging(None, Path("/"))),  # type: ignore[arg-type]
        (configspec.PEER, Peer(("ssh",), "a")),
        (configspec.KEEPALIVED, Keepalived("i", "a", Peer(("ssh",), "a"))),
    ):
        for key in section.keys.values():
            if key.default is None or not hasattr(model, key.name):
                continue
            got = getattr(model, key.name)
            want = key.default
            if isinstance(got, Path | tuple) or isinstance(want, Path | tuple):
                got, want = (
                    str(got) if isinstance(got, Path) else got,
                    str(want) if isinstance(want, Path) else want,
                )
            assert got == want, (key.name, got, want)


# -- the loader and the schema agree, key by key ---------------------------------------


def full_config(tmp_path: Path) -> dict[str, Any]:
    """A valid configuration using every section (files it names exist)."""
    secret = tmp_path / "secret"
    secret.write_text("c2VjcmV0\n")
    secret.chmod(0o600)
    root = tmp_path / "root.pem"
    root.write_text("-----BEGIN CERTIFICATE-----\n")
    roots = [str(root)]
    cmd = {"argv": ["/bin/true", "{config}"], "timeout": "30s", "env": {"A": "1"}}
    return {
        "state_dir": str(tmp_path / "state"),
        "state_group": "root",
        "template_dirs": [str(tmp_path / "templates")],
        "ca": {
            "directory": "https://ca.test/dir",
            "contact": ["ops@example.test"],
            "trust_roots": roots,
            "eab": {"kid": "k1", "hmac_key_file": str(secret)},
            "timeout": 30,
            "agree_tos": True,
            "preferred_chain": "Root X1",
        },
        "policy": {
            "keep_releases": 5,
            "order_timeout": "2m",
            "max_retry_after": 120,
            "failure_backoff": "1h",
            "max_backoff": "1d",
            "jitter": 0.05,
        },
        "certificates": {
            "www": {
                "names": ["www.example.test", "example.test"],
                "key_type": "ec-p256",
                "reuse_key": False,
                "profile": "classic",
                "failover_instance": "VI_1",
                "challenge": {"type": "http-01", "webroot": "/srv/acme"},
                "deploy": {
                    "templates": [{"template": "nginx/site.conf.j2", "dest": "/etc/x.conf"}],
                    "vars": {"port": 443},
                    "test": cmd,
                    "hook": ["/bin/true"],
                    "user": "root",
                    "endpoints": [
                        "127.0.0.1:443",
                        {"address": "[::1]:443", "sni": "x.test", "starttls": "smtp"},
                    ],
                    "verify_timeout": 10,
                    "trust_roots": roots,
                    "min_free_mb": 16,
                },
                "staging": {
                    "dir": "/etc/staging",
                    "vars": {"port": 8443},
                    "test": cmd,
                    "hook": ["/bin/true"],
                    "user": "root",
                    "endpoints": ["127.0.0.1:8443"],
                    "verify_timeout": 10,
                    "trust_roots": roots,
                    "challenge": {
                        "type": "http-01",
                        "standalone": {"address": "127.0.0.1", "port": 8080},
                    },
                },
            },
            "wild": {
                "names": ["*.wild.example.test", "wild.example.test"],
                "challenge": {
                    "type": "dns-01",
                    "rfc2136": {
                        "server": "10.0.0.53",
                        "port": 53,
                        "tsig_key_file": str(secret),
                        "zone": "example.test",
                    },
                    "nameservers": ["10.0.0.53:53"],
                    "resolver": "10.0.0.53:53",
                    "propagation_timeout": "2m",
                    "ttl": 60,
                },
                "challenges": {"wild.example.test": {"type": "http-01", "webroot": "/srv/a"}},
            },
            "api": {
                "names": ["api.example.test"],
                "challenge": {"type": "http-01", "webroot": "/srv/acme"},
                "deploy": {"endpoints": "none", "endpoints_reason": "internal"},
                "staging": False,
            },
        },
        "staging": {
            "ca": {"directory": "https://staging.test/dir"},
            "state_dir": str(tmp_path / "staging"),
            "on_unreachable": "fail",
            "remember_for": "30d",
        },
        "monitor": {
            "warning_days": 14,
            "critical_days": 3,
            "timeout": 5,
            "max_renew_age": "30h",
            "trust_roots": roots,
            "endpoints": [
                {
                    "address": "127.0.0.1:5432",
                    "name": "db",
                    "sni": "db.test",
                    "starttls": "postgres",
                    "warning_days": 10,
                    "critical_days": 2,
                    "trust_roots": roots,
                }
            ],
        },
        "metrics": {"textfile": "/var/lib/node/certagent.prom"},
        "notify": {
            "expiry_days": 14,
            "webhook": {
                "url": "https://hook.test/x",
                "timeout": 10,
                "retries": 3,
                "backoff": 2,
                "trust_roots": roots,
            },
            "email": {
                "host": "smtp.test",
                "port": 587,
                "from": "a@b.test",
                "to": ["c@d.test"],
                "starttls": True,
                "username": "u",
                "password_file": str(secret),
                "timeout": 20,
                "trust_roots": roots,
            },
        },
        "heartbeat": {"url": "https://hb.test/ping", "timeout": 10, "trust_roots": roots},
        "failover": {
            "keepalived": {
                "instance": "VI_1",
                "address": "10.0.0.11",
                "vips": ["10.0.0.10/24"],
                "pid_file": "/run/keepalived.pid",
                "dump_dir": "auto",
                "dump_timeout": 2,
                "max_advert_age": 3,
                "on_backup": "skip",
                "instances": {"VI_2": {"vips": ["10.0.0.20"]}},
                "peer": {
                    "command": ["ssh", "peer"],
                    "address": "10.0.0.12",
                    "pid_file": "/run/keepalived.pid",
                    "dump_dir": "/tmp",
                    "certagent": ["certagent"],
                    "quote": True,
                    "timeout": 300,
                },
            }
        },
    }


def leaves(node: Kind[Any], doc: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    """Every key of a plain kind that the full config reaches, as a path into it."""
    if isinstance(node, Either) and isinstance(node.other, Section | ListOf | MapOf):
        node = node.other
    if isinstance(node, Section) and isinstance(doc, dict):
        for key in node.keys.values():
            if key.name not in doc:
                continue
            inner = key.kind.other if isinstance(key.kind, Either) else key.kind
            item = inner.item if isinstance(inner, ListOf) else None
            if isinstance(inner, Section | MapOf) or isinstance(item, Section):
                yield from leaves(inner, doc[key.name], (*path, key.name))
            else:
                yield (*path, key.name)
    elif isinstance(node, MapOf) and isinstance(doc, dict):
        for name, sub in doc.items():
            yield from leaves(node.item, sub, (*path, name))
    elif isinstance(node, ListOf) and isinstance(doc, list) and doc:
        yield from leaves(node.item, doc[0], (*path, 0))


def kind_at(path: tuple[Any, ...]) -> Kind[Any]:
    node: Kind[Any] = configspec.TOP
    for part in path:
        if isinstance(node, Either):
            node = node.other
        if isinstance(node, ListOf | MapOf):
            node = node.item
        else:
            assert isinstance(node, Section)
            node = node.keys[part].kind
    return node


def dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _all_errors(errors: Iterator[jsonschema.ValidationError]) -> Iterator[Any]:
    for e in errors:
        yield e
        yield from _all_errors(iter(e.context or ()))


# Rules across keys, which a schema does not express: the loader refuses these values
# for what another key says (and names this key).
CROSS_KEY = {
    "policy.failure_backoff",  # not above max_backoff
    "notify.email.starttls",  # not false with a username: no password without STARTTLS
    "certificates.www.failover_instance",  # a configured keepalived instance
    "certificates.www.deploy.endpoints",  # `none` needs an endpoints_reason
}

CANDIDATES: list[Any] = [
    {"zz": [1]},
    [["x"]],
    [],
    "",
    "x\x01y",
    "abc",
    "/abs/path",
    "5m",
    "none",
    "auto",
    -5,
    0,
    1,
    0.5,
    587,
    99999,
    1e12,
    True,
    False,
    None,
]


def test_the_full_config_is_valid_for_both(tmp_path: Path) -> None:
    doc = full_config(tmp_path)
    jsonschema.validate(doc, configspec.json_schema())
    config.parse(yaml.safe_dump(doc), tmp_path / "c.yaml")


def test_loader_and_schema_accept_and_refuse_the_same_values(tmp_path: Path) -> None:
    base = full_config(tmp_path)
    validator = jsonschema.Draft202012Validator(configspec.json_schema())
    disagreements = []
    paths = list(leaves(configspec.TOP, base, ()))
    assert len(paths) > 100  # every key of every section is reached
    for path in paths:
        existence = isinstance(kind_at(path), User | Group | SecretFile) or path[-1] in (
            "trust_roots"
        )
        for value in CANDIDATES:
            doc = copy.deepcopy(base)
            target = doc
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = value
            at = list(path)
            schema_refuses = any(
                list(e.absolute_path)[: len(at)] == at
                for e in _all_errors(validator.iter_errors(doc))
            )
            try:
                config.parse(yaml.safe_dump(doc), tmp_path / "c.yaml")
                loader_refuses = False
            except ConfigError as err:
                here = dotted(path)
                loader_refuses = any(
                    p.path == here or p.path.startswith((f"{here}.", f"{here}["))
                    for p in err.problems
                )
            one_way = existence or dotted(path) in CROSS_KEY  # the loader may refuse more
            if one_way and loader_refuses and not schema_refuses:
                continue
            if schema_refuses != loader_refuses:
                disagreements.append((dotted(path), value, schema_refuses, loader_refuses))
    assert not disagreements, "\n".join(map(str, disagreements))


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")))
def test_shipped_examples_are_valid_for_the_schema(example: Path) -> None:
    """The demo's @PLACEHOLDERS@ are filled in as `make demo` fills them."""
    text = re.sub(r"@\w*PORT@", "8443", example.read_text())
    text = re.sub(r"@\w*DIRECTORY@", "https://127.0.0.1:14000/dir", text)
    text = re.sub(r"@\w+@", "/tmp/demo", text)
    jsonschema.validate(yaml.safe_load(text), configspec.json_schema())
