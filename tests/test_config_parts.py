"""Unit: a configuration in parts (issue #28, item 1): `certificates_dir` files beside
the main file, `defaults` shared by every certificate, errors naming file, key and
line; a large host configured at all (10,000 certificates in files of 250; 4,000 in
one file without an alias), and an alias bomb still refused."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from certagent import config
from certagent.errors import ConfigError
from certagent.model import Http01Webroot


def main(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "www").mkdir(exist_ok=True)
    path = tmp_path / "certagent.yaml"
    path.write_text(textwrap.dedent(f"""\
        state_dir: {tmp_path / "state"}
        ca: {{directory: https://ca.invalid/dir}}
        certificates_dir: certificates.d
        defaults:
          challenge: {{type: http-01, webroot: {tmp_path / "www"}}}
          deploy:
            test: [nginx, -t]
            hook: [systemctl, reload, nginx]
            endpoints: none
            endpoints_reason: watched elsewhere
        """) + extra)
    (tmp_path / "certificates.d").mkdir(exist_ok=True)
    return path


def part(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "certificates.d" / name
    path.write_text(textwrap.dedent(text))
    return path


def test_parts_and_defaults_make_one_configuration(tmp_path: Path) -> None:
    path = main(tmp_path, "certificates:\n  main: {names: [main.example.test]}\n")
    part(tmp_path, "a.yaml", """\
        shop:
          names: [shop.example.test]
          deploy:
            templates: [{template: nginx/site.conf.j2, dest: /etc/nginx/sites-enabled/shop.conf}]
        """)
    part(tmp_path, "b.yaml", "blog: {names: [blog.example.test], key_type: rsa-2048}\n")
    part(tmp_path, "notes.txt", "not read: not *.yaml\n")
    loaded = config.load(path)
    certs = {c.name: c for c in loaded.certificates}
    assert sorted(certs) == ["blog", "main", "shop"]
    assert all(isinstance(c.challenge, Http01Webroot) for c in certs.values())
    shop = certs["shop"].deploy
    assert shop is not None and shop.templates and shop.test is not None  # merged
    assert shop.hook is not None and shop.hook.argv == ("systemctl", "reload", "nginx")
    assert certs["blog"].key_type.value == "rsa-2048"


def test_errors_name_the_part_and_the_default(tmp_path: Path) -> None:
    path = main(tmp_path, "certificates:\n  shop: {names: [x.example.test]}\n")
    a = part(tmp_path, "a.yaml", "shop: {names: [shop.example.test]}\n")
    b = part(tmp_path, "b.yaml", "blog:\n  names: [blog.example.test]\n  key_type: dsa\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    text = str(caught.value)
    assert f"{a}: certificates.shop (line 1): certificate shop is also defined in the main " \
        "file" in text  # fmt: skip
    assert f"{b}: certificates.blog.key_type (line 3)" in text
    path.write_text(path.read_text().replace("test: [nginx, -t]", "test: 5"))
    a.unlink()
    b.unlink()
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    problems = [p for p in caught.value.problems if p.path == "defaults.deploy.test"]
    assert len(problems) == 1 and problems[0].line == 7 and problems[0].file is None


def test_ten_thousand_certificates_in_parts(tmp_path: Path) -> None:
    path = main(tmp_path)
    for i in range(40):
        part(tmp_path, f"p{i:02}.yaml", "".join(
            f"c{i}-{j}: {{names: [c{i}-{j}.example.test]}}\n" for j in range(250)))  # fmt: skip
    start = time.monotonic()
    loaded = config.load(path)
    assert len(loaded.certificates) == 10_000
    assert time.monotonic() - start < 120  # a generous bound: not a benchmark (make bench)


def test_a_large_file_without_aliases_is_not_an_alias_bomb(tmp_path: Path) -> None:
    path = main(tmp_path, "certificates:\n" + "".join(
        f"  c{j}: {{names: [c{j}.example.test]}}\n" for j in range(4000)))  # fmt: skip
    assert len(config.load(path).certificates) == 4000
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, "
              f"*a{i-1}, *a{i-1}, *a{i-1}]" for i in range(1, 9)]  # fmt: skip
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="alias bomb"):
        config.load(bomb)


def test_the_parts_are_bounded_together_in_certificates_and_in_bytes(tmp_path: Path) -> None:
    """Each part is bounded as the main file is; together they are too: at most
    MAX_CERTIFICATES certificates and MAX_PARTS_BYTES of text, refused naming the
    directory before any certificate is read one by one."""
    from certagent import configspec

    path = main(tmp_path)
    per = 5_000
    for p in range(configspec.MAX_CERTIFICATES // per):
        part(tmp_path, f"p{p:03d}.yaml", "".join(
            f"c{p}x{i}: {{names: [c{p}x{i}.example.test]}}\n" for i in range(per)))  # fmt: skip
    part(tmp_path, "zz.yaml", "one-more: {names: [one.example.test]}\n")
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert f"{configspec.MAX_CERTIFICATES + 1} certificates" in str(err.value)
    assert len(err.value.problems) == 1, err.value.problems
    assert time.monotonic() - started < 60  # refused whole, not read one by one

    for old in (tmp_path / "certificates.d").iterdir():
        old.unlink()
    comment = ("#" + "x" * 1022 + "\n") * 1023  # a part just under 1 MiB of comments
    count = configspec.MAX_PARTS_BYTES // len(comment) + 1
    for p in range(count):
        part(tmp_path, f"big{p:03d}.yaml", comment + f"b{p}: {{names: [b{p}.example.test]}}\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert "hold more than 64 MiB together" in str(err.value), err.value.problems[:3]
