from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from coview_server import cli
from coview_server.store import AuthError, Store, UserRow

COMMANDS = ("serve", "migrate", "create-user", "reset-password", "turn-config")
REPO = Path(__file__).resolve().parents[3]


def _login(db: Path, email: str, password: str) -> UserRow:
    async def run() -> UserRow:
        store = await Store.open(f"sqlite+aiosqlite:///{db}")
        try:
            return await store.authenticate(email, password)
        finally:
            await store.close()

    return asyncio.run(run())


def _run(monkeypatch: pytest.MonkeyPatch, argv: list[str], stdin: str = "") -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return cli.main(argv)


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out
    assert "COVIEW_ADMIN_PASSWORD" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--db" in out and "--config" in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    assert exit_.value.code == 2


def test_module_entry_point_runs() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "server"), str(REPO / "web")])}
    result = subprocess.run(
        [sys.executable, "-m", "coview_server.cli", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert all(c in result.stdout for c in COMMANDS)


def test_migrate_creates_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "sub" / "coview.db"
    assert cli.main(["migrate", "--db", str(db)]) == 0
    assert db.exists()
    assert cli.main(["migrate", "--db", str(db)]) == 0  # re-runnable
    assert "latest schema" in capsys.readouterr().out


def test_create_user_then_authenticate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "coview.db"
    argv = ["create-user", "Alice@Example.com", "--name", "Alice", "--password-stdin"]
    assert _run(monkeypatch, [*argv, "--db", str(db)], "pass word 1\n") == 0
    out = capsys.readouterr().out
    assert "alice@example.com" in out and "pass word 1" not in out

    user = _login(db, "alice@example.com", "pass word 1")  # inner spaces kept
    assert user.display_name == "Alice" and user.role == "agent"

    admin_argv = ["create-user", "root@example.com", "--name", "Root", "--admin"]
    assert _run(monkeypatch, [*admin_argv, "--password-stdin", "--db", str(db)], "rootroot\n") == 0
    assert _login(db, "root@example.com", "rootroot").is_admin


def test_create_user_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "coview.db")
    base = ["create-user", "bob@example.com", "--name", "Bob", "--password-stdin", "--db", db]
    assert _run(monkeypatch, base, "long enough\n") == 0
    capsys.readouterr()

    assert _run(monkeypatch, base, "long enough\n") == 1
    assert "already exists" in capsys.readouterr().err

    short = ["create-user", "c@example.com", "--name", "C", "--password-stdin", "--db", db]
    assert _run(monkeypatch, short, "short\n") == 1
    err = capsys.readouterr().err
    assert "at least 8" in err and "short\n" not in err

    bad_email = ["create-user", "nope", "--name", "N", "--password-stdin", "--db", db]
    assert _run(monkeypatch, bad_email, "long enough\n") == 1
    assert "not a valid email" in capsys.readouterr().err


def test_create_user_prompts_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "coview.db"
    answers = iter(["typed secret", "typed secret", "first try", "second try"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    argv = ["create-user", "d@example.com", "--name", "D", "--db", str(db)]
    assert cli.main(argv) == 0
    assert len(prompts) == 2
    assert _login(db, "d@example.com", "typed secret").email == "d@example.com"

    argv = ["create-user", "e@example.com", "--name", "E", "--db", str(db)]
    assert cli.main(argv) == 1
    assert "do not match" in capsys.readouterr().err


def test_reset_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "coview.db")
    create = ["create-user", "f@example.com", "--name", "F", "--password-stdin", "--db", db]
    assert _run(monkeypatch, create, "old password\n") == 0
    reset = ["reset-password", "F@example.com", "--password-stdin", "--db", db]
    assert _run(monkeypatch, reset, "new password\n") == 0
    assert "f@example.com" in capsys.readouterr().out

    with pytest.raises(AuthError):
        _login(tmp_path / "coview.db", "f@example.com", "old password")
    assert _login(tmp_path / "coview.db", "f@example.com", "new password").email == "f@example.com"

    unknown = ["reset-password", "ghost@example.com", "--password-stdin", "--db", db]
    assert _run(monkeypatch, unknown, "new password\n") == 1
    assert "no user" in capsys.readouterr().err


def test_serve_builds_app_from_settings_and_runs_uvicorn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    fake_app = types.ModuleType("coview_server.app")

    def create_app(settings: Any) -> str:
        seen["settings"] = settings
        return "the-app"

    def run(app: Any, **kwargs: Any) -> None:
        seen["app"] = app
        seen["kwargs"] = kwargs

    fake_app.create_app = create_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "coview_server.app", fake_app)
    monkeypatch.setattr("uvicorn.run", run)
    for key in [k for k in os.environ if k.startswith("COVIEW_")]:
        monkeypatch.delenv(key)

    config = tmp_path / "coview.toml"
    config.write_text('host = "127.0.0.2"\nport = 1234\n')
    db = tmp_path / "x.db"
    argv = ["serve", "--config", str(config), "--port", "8765", "--db", str(db)]
    assert cli.main(argv) == 0

    settings = seen["settings"]
    assert settings.host == "127.0.0.2"  # from the file
    assert settings.port == 8765  # command line wins over the file
    assert settings.database_url == f"sqlite+aiosqlite:///{db}"
    assert seen["app"] == "the-app"
    assert seen["kwargs"]["host"] == "127.0.0.2" and seen["kwargs"]["port"] == 8765


def test_serve_reports_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--config", str(tmp_path / "missing.toml")]) == 1
    assert "cannot load settings" in capsys.readouterr().err
