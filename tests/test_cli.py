"""The `pretrade` command: help lists every subcommand; top-level options never hide the command."""

import subprocess
import sys

from pretrade.cli import COMMANDS, _command_in


def test_command_is_found_after_top_level_options():
    assert _command_in(["--log-level", "WARNING", "tp", "--port", "1"]) == "tp"
    assert _command_in(["--log-level=DEBUG", "rdb"]) == "rdb"
    assert _command_in([]) is None


def test_help_lists_every_subcommand_with_its_purpose():
    out = subprocess.run([sys.executable, "-m", "pretrade.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in COMMANDS:
        assert name in out


def test_each_subcommand_has_help():
    for name in ["tp", "rdb", "hdb", "schema"]:
        r = subprocess.run([sys.executable, "-m", "pretrade.cli", name, "--help"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "usage: pretrade" in r.stdout
