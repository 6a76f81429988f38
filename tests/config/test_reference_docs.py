"""docs/reference/settings.md lists every setting of the schema (environment variable, flag,
reloadability), and docs/reference/cli.md every command and flag of the parser."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from mlsockets import config
from mlsockets.cli import build_parser
from mlsockets.config import SettingsSchema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reference"


def setting_rows() -> dict[str, list[str]]:
    rows = {}
    for line in (DOCS / "settings.md").read_text().splitlines():
        match = re.match(r"\| `(\w+)` \|", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in line.strip("|").split("|")]
    return rows


def test_every_setting_has_a_row_with_its_variable_flag_and_reload() -> None:
    rows = setting_rows()
    assert list(rows) == list(config.setting_names())  # schema order, nothing extra
    for name, field in SettingsSchema().fields.items():
        cells = rows[name]
        assert f"`{config.env_var(name)}`" in cells[1], name
        flag = field.metadata["flag"]
        assert (flag in cells[2]) if flag else cells[2] == "-", name
        assert cells[5] == ("yes" if field.metadata["reloadable"] else "no"), name


def test_every_alias_is_documented() -> None:
    text = (DOCS / "settings.md").read_text()
    for alias in [*config.ENV_ALIASES, "WS_HOST", "WS_PORT"]:
        assert f"`{alias}`" in text


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_command_and_flag_is_in_the_cli_reference(command: str) -> None:
    text = (DOCS / "cli.md").read_text()
    assert f"## `mlsockets {command}" in text
    for action in subcommands()[command]._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert f"`{option}" in text or f"{option} " in text, f"{command} {option}"
