"""The users file: hashing, verification, clear errors, and `pretrade users`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pretrade.ipc import auth
from pretrade.ipc.auth import Users, hash_password, set_user

ROOT = Path(__file__).resolve().parents[1]


def test_hash_and_verify(tmp_path):
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$") and stored != hash_password("s3cret")  # salted
    path = tmp_path / "users.toml"
    path.write_text(f'[users]\nalice = "{stored}"\n')
    users = Users.load(path)
    assert users.verify("alice", "s3cret")
    assert not users.verify("alice", "S3cret")
    assert not users.verify("bob", "s3cret")
    assert users.names() == ["alice"]


@pytest.mark.parametrize(
    "text,msg",
    [
        ("[users\n", "not valid TOML"),
        ('[users]\nx = "md5$aa$bb"\n', "user x"),
        ('[users]\nx = "scrypt$zz$00"\n', "not hex"),
        ("[users]\nx = 3\n", "must be a string"),
        ('users = "x"\n', "must be a table"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, text, msg):
    path = tmp_path / "users.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=msg) as e:
        Users.load(path)
    assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Users.load(tmp_path / "nope.toml")


def test_set_user_keeps_other_lines(tmp_path):
    path = tmp_path / "users.toml"
    path.write_text(f'# keep me\n[users]\nann = "{hash_password("a")}"\n\n[roles]\nann = "risk"\n')
    set_user(path, "bob", hash_password("b"))
    set_user(path, "ann", hash_password("new"))
    text = path.read_text()
    assert "# keep me" in text and '[roles]\nann = "risk"' in text
    users = Users.load(path)
    assert users.verify("bob", "b") and users.verify("ann", "new") and not users.verify("ann", "a")
    with pytest.raises(ValueError, match="user name"):
        set_user(path, "bad name", hash_password("x"))


def test_cli_add_and_list(tmp_path, monkeypatch, capsys):
    path = tmp_path / "u.toml"
    monkeypatch.setenv("PRETRADE_PASSWORD", "pw1")
    parser = argparse.ArgumentParser()
    auth.add_arguments(parser)
    assert auth.run(parser.parse_args(["add", "carol", "--file", str(path)])) == 0
    assert auth.run(parser.parse_args(["list", "--file", str(path)])) == 0
    assert capsys.readouterr().out.split() == ["carol"]
    assert Users.load(path).verify("carol", "pw1")


def test_example_users_file_loads():
    users = Users.load(ROOT / "config" / "users.toml")
    assert users.verify("demo", "demo")
