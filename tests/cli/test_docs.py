"""The documentation cannot drift from the program: every command and flag that ``--help`` knows
is in the CLI reference, and the README stays a guide."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def every_command_and_flag(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """``{"": window flags, "eval": its flags, ...}`` as ``--help`` shows them."""
    found = {"": set()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = {s for a in sub._actions for s in a.option_strings if s not in ("-h", "--help")}
        else:
            found[""] |= {s for s in action.option_strings if s not in ("-h", "--help")}
    return found


def sections(text: str) -> dict[str, str]:
    """The reference's sections by command: "## `eval`" holds eval's flags; "## The window" the window's."""
    out, name = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            name = "" if title == "The window" else title.strip("`") if title.startswith("`") else None
            if name is not None:
                out[name] = ""
        elif name is not None:
            out[name] += line + "\n"
    return out


def missing_from_reference(reference: str) -> list[str]:
    docs = sections(reference)
    missing = []
    for command, flags in every_command_and_flag(build_parser()).items():
        if command not in docs:
            missing.append(f"command {command}")
            continue
        missing += [f"{command or 'window'} {flag}" for flag in sorted(flags) if f"`{flag}`" not in docs[command]]
    return missing


def test_every_command_and_flag_is_in_the_cli_reference():
    assert missing_from_reference((ROOT / "docs" / "cli.md").read_text(encoding="utf-8")) == []


def test_the_reference_check_finds_a_flag_that_is_not_there():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8").replace("`--tta`", "`--tt a`")
    assert missing_from_reference(text) == ["eval --tta"]


def test_the_readme_is_a_guide_with_the_two_set_up_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 180
    assert '.venv/bin/pip install . && .venv/bin/python main.py' in readme
    assert '.venv/bin/pip install ".[test]" && .venv/bin/python -m pytest' in readme
    for page in ("architecture", "benchmarks", "training", "cli", "numbers", "troubleshooting"):
        assert f"docs/{page}.md" in readme and (ROOT / "docs" / f"{page}.md").is_file()
