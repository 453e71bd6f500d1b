"""Fuzzed configurations never crash, hang or balloon certagent (issue #12).

A fixed seed mutates a configuration that uses every documented key (and the shipped
examples): wrong types, out-of-range and non-finite numbers, control characters,
unknown and missing keys, YAML alias bombs and self-references, foreign tags, deep
nesting, NUL bytes, truncation and flipped bytes. Each file goes through
`config validate`, `plan`, `check` and `health` in a worker process (tests/fuzz_worker.py)
that limits each command to 5 s and the process to 2 GiB of address space.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from testbed import pki

ROOT = Path(__file__).resolve().parent.parent
SEED = 20261201
COUNT = 1000
DOCUMENTED = {
    "config": {0, 64, 78},
    "plan": {0, 1, 64, 75, 78},
    "check": {0, 1, 2, 3},
    "health": {0, 1},
}

BASE = """\
state_dir: {tmp}/state
state_group: 0
template_dirs: [{tmp}/templates]
ca:
  directory: https://127.0.0.1:14000/dir
  contact: [ops@example.test]
  trust_roots: [{tmp}/root.pem]
  eab: {{kid: k1, hmac_key_file: {tmp}/hmac}}
  timeout: 30
  agree_tos: true
  preferred_chain: Some Root X1
policy: {{keep_releases: 5, order_timeout: 2m, max_retry_after: 120, failure_backoff: 1h,
          max_backoff: 1d, jitter: 0.05}}
staging:
  ca: {{directory: "https://127.0.0.1:9443/acme/acme/directory", trust_roots: [{tmp}/root.pem]}}
  state_dir: {tmp}/staging
  on_unreachable: fail
  remember_for: 30d
monitor:
  warning_days: 14
  critical_days: 3
  timeout: 1s
  max_renew_age: 30h
  trust_roots: [{tmp}/root.pem]
  endpoints:
    - {{name: db, address: "127.0.0.1:1", sni: db.example.test, starttls: postgres,
       warning_days: 10, critical_days: 2, trust_roots: [{tmp}/root.pem]}}
metrics: {{textfile: {tmp}/metrics.prom}}
notify:
  expiry_days: 14
  webhook: {{url: "http://127.0.0.1:1/hook", timeout: 1, retries: 1, backoff: 0,
             trust_roots: [{tmp}/root.pem]}}
  email: {{host: 127.0.0.1, port: 1, from: a@example.test, to: [b@example.test],
           starttls: true, username: u, password_file: {tmp}/pw, timeout: 1,
           trust_roots: [{tmp}/root.pem]}}
heartbeat: {{url: "http://127.0.0.1:1/hb", timeout: 1, trust_roots: [{tmp}/root.pem]}}
failover:
  keepalived:
    instance: VI_1
    address: 127.0.0.1
    vips: [10.0.0.100/24]
    pid_file: {tmp}/keepalived.pid
    dump_dir: {tmp}/dump
    dump_timeout: 1s
    max_advert_age: 1s
    on_backup: skip
    instances: {{VI_2: {{vips: [10.0.0.101/24]}}}}
    peer:
      command: [ssh, -o, BatchMode=yes, root@127.0.0.2]
      address: 127.0.0.2
      pid_file: {tmp}/keepalived.pid
      dump_dir: {tmp}/dump
      certagent: [certagent]
      quote: true
      timeout: 60
certificates:
  www:
    names: [www.example.test, example.test]
    key_type: ec-p256
    profile: classic
    reuse_key: false
    failover_instance: VI_2
    challenge: {{type: http-01, webroot: {tmp}/webroot}}
    deploy:
      templates: [{{template: nginx/site.conf.j2, dest: {tmp}/nginx/www.conf}}]
      vars: {{port: 443, list: [1, 2]}}
      test: [nginx, -t]
      hook: {{argv: ["true"], timeout: 10, env: {{SITE: blue}}}}
      user: root
      endpoints: ["127.0.0.1:1", {{address: "127.0.0.1:2", sni: example.test,
                  starttls: postgres}}]
      verify_timeout: 1
      trust_roots: [{tmp}/root.pem]
      min_free_mb: 16
    staging:
      dir: {tmp}/staging-www
      vars: {{port: 8443}}
      test: {{shell: "nginx -t", timeout: 5}}
      hook: ["true"]
      endpoints: ["127.0.0.1:3"]
      verify_timeout: 1
      trust_roots: [{tmp}/root.pem]
      challenge: {{type: http-01, standalone: {{address: 127.0.0.1, port: 5002}}}}
  api:
    names: [api.example.test]
    key_type: rsa-2048
    challenge: {{type: http-01, standalone: {{address: 127.0.0.1, port: 5002}}}}
    deploy: {{endpoints: none, endpoints_reason: a hardware appliance}}
    staging: false
"""


def _values(tmp: Path) -> list[Any]:
    return [
        None, True, False, 0, -1, 1, 7, 65536, 10**400, 2**63, float("inf"), float("-inf"),
        float("nan"), 1e308, -0.5, 0.999, "", " ", "x", "a\nb", "www.example.test\n",
        "a\0b", "../../etc/passwd", "relative/path", f"{tmp}", f"{tmp}/missing",
        f"{tmp}/root.pem", "*.example.test", "é", "x" * 5000, [], {}, [None], [[[]]],
        {"a": 1}, {"argv": []}, "1d", "-5m", "99999999999999999999d", "1e400", ".inf",
        "http://", "https://127.0.0.1:1/x", "127.0.0.1:1", "[::1]:1", "::1", "10.0.0.1/33",
        "mailto:", "@", "ec-p256", "dns-01", "tls-alpn-01", "fail", "skip", "proceed",
        "nginx/site.conf.j2", "{{ evil }}", "127.0.0.1:0", "host:99999",
    ]  # fmt: skip


def _nodes(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _nodes(v, (*path, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _nodes(v, (*path, i))
    return out


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return tree


def _mutate_tree(rng: random.Random, tree: Any, values: list[Any]) -> Any:
    for _ in range(rng.randint(1, 3)):
        paths = _nodes(tree)
        path = rng.choice(paths[1:])
        op = rng.random()
        parent = tree
        for key in path[:-1]:
            parent = parent[key]
        if op < 0.6:
            tree = _set(tree, path, rng.choice(values))
        elif op < 0.75 and isinstance(parent, dict):
            del parent[path[-1]]
        elif op < 0.85 and isinstance(parent, dict):
            parent[rng.choice(["unknown", "names", "typo_key", "<<"])] = rng.choice(values)
        else:
            old = parent[path[-1]]
            tree = _set(tree, path, [old] if rng.random() < 0.5 else {"wrapped": old})
    return tree


def _mutate_text(rng: random.Random, text: str, tmp: Path) -> bytes:
    op = rng.randrange(9)
    lines = text.splitlines(keepends=True)
    if op == 0:  # billion laughs
        bomb = "lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        for i in range(1, 9):
            bomb += f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n"
        return (bomb + text).encode()
    if op == 1:  # self-reference
        return (f"loop: &loop {{a: [*loop]}}\n{text}").encode()
    if op == 2:  # a foreign tag on a real value
        i = rng.randrange(len(lines))
        key = lines[i].split(":")[0]
        tag = f'!!python/object/apply:os.system ["touch {tmp}/pwned"]'
        lines[i] = f"{key}: {tag}\n" if ":" in lines[i] else lines[i]
        return "".join(lines).encode()
    if op == 3:  # deep nesting
        depth = rng.choice([40, 500, 3000])
        return (f"deep: {'[' * depth}{']' * depth}\n{text}").encode()
    if op == 4:  # NUL byte
        i = rng.randrange(len(text))
        return (text[:i] + "\0" + text[i:]).encode()
    if op == 5:  # truncated
        return text[: rng.randrange(len(text))].encode()
    if op == 6:  # flipped byte (maybe not UTF-8 any more)
        data = bytearray(text.encode())
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        return bytes(data)
    if op == 7:  # a line twice (duplicate keys)
        i = rng.randrange(len(lines))
        return "".join(lines[: i + 1] + lines[i:]).encode()
    big = rng.choice(["9" * 5000, "1" + "0" * 400, "x" * 200_000])
    return (text + f"policy_extra: {big}\n").encode()


def _example(path: Path, tmp: Path) -> str:
    """A shipped example with its @PLACEHOLDERS@ filled in as `make demo` would."""
    text = path.read_text()
    for key in ("DIRECTORY", "STAGING_DIRECTORY"):
        text = text.replace(f"@{key}@", "https://127.0.0.1:1/dir")
    for key in ("TRUST_ROOT", "STAGING_ROOT"):
        text = text.replace(f"@{key}@", str(tmp / "root.pem"))
    text = re.sub(r"@[A-Z_]*PORT@", "1", text)
    return re.sub(r"@[A-Z_]+@", str(tmp), text)


def _corpus(tmp: Path) -> int:
    ca = pki.make_ca("fuzz root")
    (tmp / "root.pem").write_bytes(ca.pem())
    (tmp / "hmac").write_text("c2VjcmV0\n")
    (tmp / "pw").write_text("password\n")
    (tmp / "templates").mkdir()
    rng = random.Random(SEED)  # noqa: S311 - a reproducible fuzz corpus, not a secret
    base = BASE.format(tmp=tmp)
    bases = [base] + [_example(p, tmp) for p in sorted((ROOT / "examples").glob("*.yaml"))]
    values = _values(tmp)
    folder = tmp / "configs"
    folder.mkdir()
    for n in range(COUNT):
        source = bases[0] if rng.random() < 0.85 else rng.choice(bases)
        tree = yaml.safe_load(source)
        if isinstance(tree, dict):  # an example's own state dir is not ours to touch
            tree["state_dir"] = str(tmp / "state")
        if rng.random() < 0.85:
            tree = _mutate_tree(rng, tree, values)
        text = yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)
        data = _mutate_text(rng, text, tmp) if rng.random() < 0.3 else text.encode()
        (folder / f"{n:04d}.yaml").write_bytes(data)
    return COUNT


def test_fuzzed_configurations_exit_with_documented_codes(tmp_path: Path) -> None:
    _corpus(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz_worker", str(tmp_path / "configs")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    rss = rows.pop()["max_rss_kib"]
    bad = []
    commands: dict[str, int] = {}
    for row in rows:
        command = row["args"][0]
        commands[command] = commands.get(command, 0) + 1
        text = row.get("out", "") + row.get("err", "")
        if (
            row["code"] not in DOCUMENTED.get(command, set())
            or "internal error" in text
            or row.get("seconds", 99) > 5
        ):
            bad.append(row)
    assert not bad, json.dumps(bad[:5], indent=1)
    assert not (tmp_path / "pwned").exists(), "a YAML tag ran a command"
    assert rss < 512 * 1024, f"the worker grew to {rss // 1024} MiB"
    # every command was really exercised, not skipped by the IP-only rule
    assert commands["config"] == COUNT and commands["plan"] == COUNT
    assert commands.get("check", 0) > COUNT // 2 and commands.get("health", 0) > COUNT // 2
