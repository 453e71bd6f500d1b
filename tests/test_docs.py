"""Unit: the README is one page that works (issue #27): its configuration parses, every
command it shows is a real one, and every link in it and in the guides leads to a file
that exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from certagent import config
from certagent.cliparser import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs").glob("*.md"))


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_the_readme_is_one_page_and_opens_with_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 120
    first = blocks(text, "sh")[0].splitlines()
    assert [line.split()[:2] for line in first] == [["make", "demo"], ["make", "test"]]
    assert "acme-staging-v02.api.letsencrypt.org" in text  # staging first


def test_the_readme_configuration_parses(tmp_path: Path) -> None:
    (yaml_text,) = blocks(README.read_text(), "yaml")
    text = yaml_text.replace("/var/lib/certagent", str(tmp_path / "state"))
    cfg = config.parse(text, tmp_path / "certagent.yaml")
    assert [c.name for c in cfg.certificates] == ["www"]


@pytest.mark.parametrize("page", [README, *GUIDES], ids=lambda p: p.name)
def test_every_command_a_page_shows_is_a_real_one(page: Path) -> None:
    parser = build_parser()
    for block in blocks(page.read_text(), "sh"):
        for line in block.splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue  # a line of a here-document or a continued line
            if not words or words[0] != "certagent" or "..." in words or "$(" in line:
                continue
            try:
                parser.parse_args(words[1:])
            except (SystemExit, Exception) as exc:  # argparse's and our parser's refusals
                pytest.fail(f"{page.name}: `{line.strip()}` is not a valid command ({exc})")


@pytest.mark.parametrize("page", [README, *GUIDES], ids=lambda p: p.name)
def test_every_link_leads_somewhere(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name}: {target} does not exist"
