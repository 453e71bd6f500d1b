"""Unit: strict configuration parsing; every problem with its key path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from certagent import config
from certagent.errors import ConfigError, ExitStatus
from certagent.model import Http01Standalone, Http01Webroot, KeyType

GOOD = """\
state_dir: /var/lib/certagent
ca:
  directory: https://acme.example.test/directory
  contact: [ops@example.test]
policy:
  keep_releases: 3
  order_timeout: 2m
certificates:
  www:
    names: [www.example.test, Example.Test.]
    key_type: rsa-3072
    challenge: {type: http-01, webroot: /var/www/acme}
  api:
    names: [api.example.test]
    challenge: {type: http-01, standalone: {address: 127.0.0.1, port: 8080}}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.parse(text, Path("/etc/certagent/certagent.yaml"))
    assert info.value.exit_status is ExitStatus.CONFIG
    return [str(p) for p in info.value.problems]


def test_good_config() -> None:
    cfg = config.parse(GOOD, Path("x.yaml"))
    assert cfg.ca.contact == ("mailto:ops@example.test",)
    assert cfg.policy.keep_releases == 3
    assert cfg.policy.order_timeout == 120
    www, api = cfg.certificates
    assert www.names == ("www.example.test", "example.test")
    assert www.key_type is KeyType.RSA_3072
    assert www.challenge == Http01Webroot(Path("/var/www/acme"))
    assert api.key_type is KeyType.EC_P256
    assert api.challenge == Http01Standalone("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("  keep_releases: 3", "  keep_releases: 3\n  colour: blue"),
            "policy.colour (line 7): unknown key",
        ),
        (
            ("  order_timeout: 2m", "  order_timeout: [2]"),
            "policy.order_timeout (line 7): expected a duration",
        ),
        (
            ("[api.example.test]", "[]"),
            "certificates.api.names (line 14): the list of names is empty",
        ),
        (
            ("[api.example.test]", "['*.example.test']"),
            "certificates.api.names (line 14): wildcard *.example.test needs challenge type dns-01",
        ),
        (
            ("[api.example.test]", "[www.example.test]"),
            "certificates.api.names (line 14): www.example.test is also in certificate 'www'",
        ),
        (("[api.example.test]", "[a.test, A.test]"), "duplicate name a.test"),
        (("[api.example.test]", "[bad_name.test]"), "not a valid DNS name: 'bad_name.test'"),
        (
            ("key_type: rsa-3072", "key_type: dsa"),
            "certificates.www.key_type (line 11): unknown key type 'dsa'",
        ),
        (("port: 8080", "port: 99999"), "expected a port number 1-65535, got 99999"),
        (("webroot: /var/www/acme", "webroot: www"), "expected an absolute path, got 'www'"),
        (
            ("type: http-01, webroot", "type: tls-alpn-02, webroot"),
            "unknown challenge type 'tls-alpn-02'",
        ),
        (
            ("type: http-01, webroot", "type: dns-01, webroot"),
            "dns-01 needs exactly one of 'rfc2136' and 'hook' (given: webroot)",
        ),
        (
            ("  contact: [ops@example.test]", "  contact: ops@example.test"),
            "ca.contact (line 4): expected a list, got a string",
        ),
        (
            ("directory: https://acme.example.test/directory", "directory: acme.example.test"),
            "ca.directory (line 3): expected an http(s) URL",
        ),
        (("  api:", "  www:"), "certificates.www (line 13): duplicate key"),
        (("ca:\n", "ca:\n  timeout: x\n"), "ca.timeout (line 3): expected a duration"),
    ],
)
def test_each_error_is_located(edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in GOOD
    found = problems(GOOD.replace(old, new, 1))
    assert any(expected in p for p in found), found


def test_all_problems_at_once() -> None:
    text = GOOD.replace("keep_releases: 3", "keep_releases: 0").replace("rsa-3072", "x")
    text = text.replace("port: 8080", "port: 0")
    found = problems(text)
    assert len(found) == 3, found


def test_missing_sections_and_bad_yaml() -> None:
    assert problems("state_dir: /x\n") == [
        "(top level) (line 1): missing required key 'ca'",
        "(top level) (line 1): missing required key 'certificates'",
    ]
    assert "invalid YAML" in problems("ca: [\n")[0]
    assert problems("") == ["(top level): the file is empty"]


def test_unreadable_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "missing.yaml")
    assert str(tmp_path / "missing.yaml") in str(info.value)
    assert "No such file" in str(info.value)


def test_eab_from_file(tmp_path: Path) -> None:
    key = tmp_path / "hmac"
    key.write_text("c2VjcmV0\n")
    text = GOOD.replace("  contact:", f"  eab: {{kid: k1, hmac_key_file: {key}}}\n  contact:")
    cfg = config.parse(text, Path("x.yaml"))
    assert cfg.ca.eab is not None and cfg.ca.eab.hmac_key == "c2VjcmV0"
    assert "c2VjcmV0" not in repr(cfg)  # the secret stays out of reprs and logs


def test_path_precedence() -> None:
    assert config.default_path("/a.yaml", {"CERTAGENT_CONFIG": "/b.yaml"}) == Path("/a.yaml")
    assert config.default_path(None, {"CERTAGENT_CONFIG": "/b.yaml"}) == Path("/b.yaml")
    assert config.default_path(None, {}) == config.DEFAULT_PATH


STAGED = """\
state_dir: /var/lib/certagent
ca: {directory: https://acme.example.test/directory}
staging:
  ca: {directory: https://step-ca.internal.test/acme/acme/directory}
  remember_for: 7d
certificates:
  www:
    names: [www.example.test]
    challenge: {type: http-01, webroot: /var/www/acme}
    deploy:
      templates: [{template: nginx/site.conf.j2, dest: /etc/nginx/sites-enabled/www.conf}]
      vars: {listen: 443}
      hook: [systemctl, reload, nginx]
    staging:
      dir: /srv/staging/nginx
      vars: {listen: 8443}
      test: [nginx, -t, -c, /srv/staging/nginx.conf]
      hook: [systemctl, reload, nginx-staging]
      endpoints: ["127.0.0.1:8443"]
  plain:
    names: [plain.example.test]
    challenge: {type: http-01, webroot: /var/www/acme}
"""


def test_staging_target_and_ca() -> None:
    cfg = config.parse(STAGED, Path("x.yaml"))
    assert cfg.staging is not None
    assert cfg.staging.state_dir == Path("/var/lib/certagent/staging")
    assert cfg.staging.remember_for == 7 * 86400
    assert cfg.staging.on_unreachable.value == "fail"  # fails closed unless told otherwise
    www = cfg.certificate("www")
    assert www is not None and www.staging is not None
    assert www.staging.dir == Path("/srv/staging/nginx")
    assert www.staging.endpoints[0].sni == "www.example.test"
    assert www.staging.hook is not None and www.staging.hook.argv[-1] == "nginx-staging"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (  # a deployed certificate must be rehearsed, or opt out explicitly
            ("    staging:\n      dir: /srv/staging/nginx\n", "    other:\n      dir: /x\n"),
            "certificates.www (line 8): a staging CA is configured, so this certificate needs",
        ),
        (  # rendering the rehearsal over the production file
            ("dir: /srv/staging/nginx", "dir: /etc/nginx/sites-enabled"),
            "certificates.www.staging.dir (line 15): would render over the production file",
        ),
        (
            ("staging:\n  ca:", "staging:\n  on_unreachable: maybe\n  ca:"),
            "staging.on_unreachable (line 4): expected one of fail, proceed",
        ),
        (
            ('endpoints: ["127.0.0.1:8443"]', 'endpoints: ["www.example.test:443"]'),
            "is a production endpoint",
        ),
    ],
)
def test_staging_problems(edit: tuple[str, str], expected: str) -> None:
    assert edit[0] in STAGED
    found = problems(STAGED.replace(*edit))
    assert any(expected in p for p in found), found


def test_staging_can_be_declined_per_certificate_but_needs_a_ca() -> None:
    text = STAGED.replace(STAGED[STAGED.index("    staging:\n") : STAGED.index("  plain:")], "")
    cfg = config.parse(
        text.replace(
            "      hook: [systemctl, reload, nginx]\n",
            "      hook: [systemctl, reload, nginx]\n    staging: false\n",
        ),
        Path("x.yaml"),
    )
    www = cfg.certificate("www")
    assert www is not None and www.staging is None
    no_ca = STAGED.replace(
        STAGED[STAGED.index("staging:\n  ca") : STAGED.index("certificates:")], ""
    )
    assert any("needs a top-level 'staging' CA" in p for p in problems(no_ca))


def test_monitor_section() -> None:
    text = GOOD + (
        "monitor:\n"
        "  warning_days: 21\n"
        "  max_renew_age: 2d\n"
        "  endpoints:\n"
        "    - {name: db, address: 'db.example.net:5432', starttls: postgres, critical_days: 5}\n"
        "    - {address: '[2001:db8::1]:465'}\n"
    )
    cfg = config.parse(text, Path("x.yaml"))
    assert cfg.monitor.warning_days == 21 and cfg.monitor.max_renew_age == 2 * 86400
    db, v6 = cfg.monitor.endpoints
    assert (db.endpoint.host, db.endpoint.port, db.endpoint.sni) == (
        "db.example.net",
        5432,
        "db.example.net",
    )
    assert db.starttls == "postgres" and db.critical_days == 5 and db.warning_days is None
    assert v6.name == "[2001:db8::1]:465" and v6.endpoint.host == "2001:db8::1"


def test_monitor_problems() -> None:
    text = GOOD + (
        "monitor:\n"
        "  critical_days: 30\n"
        "  endpoints:\n"
        "    - {address: 'db:5432', starttls: mysql}\n"
        "    - {address: nope}\n"
    )
    found = problems(text)
    assert any("critical_days (30) is above warning_days (14)" in p for p in found), found
    assert any("unknown protocol 'mysql'" in p for p in found), found
    assert any("expected host:port" in p for p in found), found


@pytest.mark.parametrize(
    "text",
    [
        "a:\n" + "".join(" " * (i + 1) + "k:\n" for i in range(40)),  # block, 41 deep
        "x: " + "[" * 33 + "]" * 33,  # flow, 34 deep
        "[" * 5000 + "]" * 5000,  # past libyaml's own limit
        "a: &deep " + "[" * 20 + "]" * 20 + "\nb: " + "[" * 20 + "*deep" + "]" * 20,  # via an alias
    ],
)
def test_nesting_past_the_limit_is_refused_with_a_line(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse(text, Path("deep.yaml"))
    (problem,) = exc.value.problems
    assert f"nested deeper than {config.MAX_DEPTH} levels" in problem.message
    assert problem.line is not None


def test_without_libyaml_the_depth_is_checked_before_composing() -> None:
    with pytest.raises(config._Refused, match="nested deeper"):
        config._check_shape("[" * 100 + "]" * 100)
    config._check_shape("a: [[1]]\n")
