"""Unit: template rendering, deploy configuration, the readability check."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from certagent import config, render, system
from certagent.deploy import Deployer, Prober, link_dest, render_configs, unreadable_by
from certagent.errors import ConfigError
from certagent.model import CertSpec, DeploySpec, Http01Webroot, KeyType, TemplateSpec
from certagent.store import Store
from certagent.system import SystemClock

BASE = """\
ca: {directory: https://ca.example.test/dir}
certificates:
  www:
    names: [www.example.test]
    challenge: {type: http-01, webroot: /srv}
"""


def spec_with(templates: tuple[TemplateSpec, ...], variables: dict[str, object]) -> CertSpec:
    deploy = DeploySpec(templates=templates, vars=variables)
    return CertSpec(
        "www",
        ("www.example.test", "example.test"),
        KeyType.EC_P256,
        Http01Webroot(Path("/srv")),
        deploy,
    )


@pytest.mark.parametrize(
    "template,variables",
    [
        ("nginx/nginx.conf.j2", {}),
        ("nginx/site.conf.j2", {"upstream": "http://127.0.0.1:8080"}),
        ("haproxy/haproxy.cfg.j2", {"backend_servers": ["10.0.0.5:8080"]}),
        ("apache/site.conf.j2", {"document_root": "/var/www/html"}),
    ],
)
def test_shipped_templates_render_with_release_paths(
    template: str, variables: dict[str, object], tmp_path: Path
) -> None:
    dest = tmp_path / "out.conf"
    spec = spec_with((TemplateSpec(template, dest),), variables)
    release = tmp_path / "releases" / "r1"
    files = render_configs(spec, release, tmp_path / "current", ())
    text = files["rendered/out.conf"].decode()
    assert str(release) in text  # paths point at the release itself
    assert "r1" in text


def test_missing_variable_names_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("ok\nlisten {{ vars.port }};\n")
    with pytest.raises(render.RenderError) as info:
        render.render("t.j2", {"vars": {}}, [tmp_path])
    assert "template t.j2 line 2" in str(info.value)
    assert "port" in str(info.value)


def test_unknown_template_lists_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(render.RenderError) as info:
        render.render("nope.j2", {}, [tmp_path])
    assert "nope.j2 not found" in str(info.value) and str(tmp_path) in str(info.value)


def test_deploy_section_parses() -> None:
    text = (
        BASE
        + """\
    deploy:
      templates: [{template: nginx/nginx.conf.j2, dest: /etc/nginx/nginx.conf}]
      vars: {listen: 8443}
      test: [nginx, -t, -c, "{config}"]
      hook: {shell: "nginx -s reload", timeout: 5s}
      endpoints: ["127.0.0.1:8443", {address: "[::1]:443", sni: example.test}]
"""
    )
    deploy = config.parse(text, Path("x.yaml")).certificates[0].deploy
    assert deploy is not None
    assert deploy.test is not None and deploy.test.argv == ("nginx", "-t", "-c", "{config}")
    assert deploy.hook is not None and deploy.hook.shell and deploy.hook.timeout == 5
    assert [str(e) for e in deploy.endpoints] == [
        "127.0.0.1:8443 (SNI www.example.test)",
        "::1:443 (SNI example.test)",
    ]


def test_deploy_defaults_to_each_name_on_443() -> None:
    deploy = config.parse(BASE + "    deploy: {}\n", Path("x.yaml")).certificates[0].deploy
    assert deploy is not None
    assert [(e.host, e.port, e.sni) for e in deploy.endpoints] == [
        ("www.example.test", 443, "www.example.test")
    ]


@pytest.mark.parametrize(
    "deploy,expected",
    [
        ("{hook: 'systemctl reload nginx'}", "expected a list of arguments, or a mapping"),
        ("{hook: {argv: [a], shell: b}}", "give exactly one of 'argv' (a list) and 'shell'"),
        ("{endpoints: [localhost]}", "expected host:port"),
        ("{templates: [{template: /etc/x.j2, dest: /x}]}", "must be relative"),
        ("{user: no-such-user-here}", "no such user"),
        ("{verify_timeout: forever}", "expected a duration"),
    ],
)
def test_deploy_errors(deploy: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(BASE + f"    deploy: {deploy}\n", Path("x.yaml"))
    assert any(expected in str(p) for p in info.value.problems), info.value.problems


def test_link_dest_keeps_the_original(tmp_path: Path) -> None:
    dest = tmp_path / "nginx.conf"
    dest.write_text("hand written")
    target = tmp_path / "current" / "rendered" / "nginx.conf"
    note = link_dest(dest, target)
    assert note is not None and "kept the original" in note
    assert os.readlink(dest) == str(target)
    assert (tmp_path / "nginx.conf.certagent-orig").read_text() == "hand written"
    assert link_dest(dest, target) is None  # already in place: nothing to do


def test_unreadable_by() -> None:
    base = Path(tempfile.mkdtemp(prefix="certagent-perm-", dir="/tmp"))  # /tmp: world-traversable
    try:
        base.chmod(0o755)
        private = base / "private"
        private.mkdir(mode=0o700)
        key = private / "key.pem"
        key.write_text("k")
        key.chmod(0o600)
        assert unreadable_by(key, "root") is None
        assert unreadable_by(key, "nobody") == f"user nobody cannot enter {private} (mode 700)"
        private.chmod(0o755)
        assert unreadable_by(key, "nobody") == f"user nobody cannot read {key} (mode 600)"
        key.chmod(0o644)
        assert unreadable_by(key, "nobody") is None
        assert (
            unreadable_by(base / "missing", "nobody")
            == f"{base / 'missing'}: No such file or directory"
        )
    finally:
        shutil.rmtree(base)


def test_preflight_asks_the_kernel_so_acls_count(tmp_path: Path) -> None:
    """Mode bits allow it, a POSIX ACL forbids it: only asking as the user sees that."""
    if os.geteuid() != 0 or shutil.which("setfacl") is None:
        pytest.fail("needs root and setfacl (make deps installs acl)")
    base = Path(tempfile.mkdtemp(prefix="certagent-acl-", dir="/tmp"))
    try:
        base.chmod(0o755)
        chain = base / "fullchain.pem"
        chain.write_text("chain")
        chain.chmod(0o644)
        gate = Deployer(Store(tmp_path), system.run, _no_prober, SystemClock()).gate
        assert gate.unreadable(chain, "nobody") is None
        subprocess.run(["setfacl", "-m", "u:nobody:---", str(chain)], check=True)
        assert unreadable_by(chain, "nobody") is None  # the mode bits alone would say yes
        assert gate.unreadable(chain, "nobody") == (
            f"user nobody cannot read {chain} (ACL or security module)"
        )
    finally:
        shutil.rmtree(base)


def _no_prober(deploy: DeploySpec) -> Prober:
    raise AssertionError("not used")


@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root")
def test_candidate_view_shows_every_candidate_in_a_mixed_directory(tmp_path: Path) -> None:
    """Issue #15: one destination exists (a plain file), another does not yet, both in
    the same directory, plus a subdirectory: inside the view both show the candidate and
    the rest is as it was; outside nothing changed."""
    import datetime as dt

    from certagent import system
    from certagent.deploy.view import candidate_view
    from certagent.model import DeploySpec, KeyType, Release, TemplateSpec

    live = tmp_path / "etc"
    (live / "sub").mkdir(parents=True)
    (live / "sub" / "inc.conf").write_text("included\n")
    (live / "a.conf").write_text("old a\n")
    (live / "other.conf").write_text("other\n")
    release_dir = tmp_path / "release"
    (release_dir / "rendered").mkdir(parents=True)
    (release_dir / "rendered" / "a.conf").write_text("new a\n")
    (release_dir / "rendered" / "b.conf").write_text("new b\n")
    deploy = DeploySpec(templates=(TemplateSpec("x", live / "a.conf"),
                                   TemplateSpec("y", live / "b.conf")))  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    release = Release("www", "r1", release_dir, ("w",), KeyType.EC_P256, now, now, "ab", "CN")
    candidates = {t.dest: release.path / "rendered" / t.dest.name for t in deploy.templates}
    view = candidate_view(candidates, tmp_path / "scratch")
    assert view is not None
    files = [str(live / n) for n in ("a.conf", "b.conf", "other.conf", "sub/inc.conf")]
    result = system.run([*view, "cat", *files], 10, {})
    assert result.ok, result.output
    assert result.output == "new a\nnew b\nother\nincluded\n"
    assert (live / "a.conf").read_text() == "old a\n" and not (live / "b.conf").exists()


def test_a_template_is_compiled_once_and_an_edit_is_seen_at_once(tmp_path: Path) -> None:
    """Issue #28: 100 certificates sharing a template compile it once per process; the
    compiled one is reused only while the file says the same, so an edit of the same
    size within the same mtime tick is still seen."""
    template = tmp_path / "t.j2"
    template.write_text("a {{ x }}\n")
    assert render.render("t.j2", {"x": 1}, [tmp_path]) == "a 1\n"
    st = template.stat()
    template.write_text("b {{ x }}\n")  # same size
    os.utime(template, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    assert render.render("t.j2", {"x": 2}, [tmp_path]) == "b 2\n"
    assert render.render("t.j2", {"x": 3}, [tmp_path]) == "b 3\n"
