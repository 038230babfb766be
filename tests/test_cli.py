"""The installed command, as `make run` starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import pytest


def _run(
    args: list[str],
    cwd: Path,
    stdin: str | IO[bytes] | int = "",
    timeout: float = 120,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run the command; ``stdin`` is text to pipe in, or a file (or DEVNULL) to read from."""
    environment = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
    environment.update(env)
    given: dict[str, Any] = {"input": stdin} if isinstance(stdin, str) else {"stdin": stdin}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=timeout,
        **given,
    )


def test_console_bot_answers_aide_in_french_and_stops_at_end_of_input(tmp_path: Path) -> None:
    result = _run([], tmp_path, stdin="/aide\ntg:ouest Bonjour\n/inconnue\n")
    assert result.returncode == 0, result.stderr
    assert "Bonjour ! Je suis le bot du Forum Habitant de Loos-en-Gohelle." in result.stdout
    assert "Je ne connais pas la commande /inconnue." in result.stdout
    assert "running on the console" in result.stderr
    # The default database is a local SQLite file, created on first run.
    assert (tmp_path / "data" / "forum.db").exists()


def test_a_bad_setting_stops_start_up_with_one_clear_message(tmp_path: Path) -> None:
    result = _run([], tmp_path, TIMEZONE="Mars/Olympus")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Invalid configuration (environment):",
        "  - TIMEZONE: unknown time zone 'Mars/Olympus' (e.g. Europe/Paris)",
    ]


def test_migrate_and_check_config(tmp_path: Path) -> None:
    assert _run(["migrate"], tmp_path).returncode == 0
    assert (tmp_path / "data" / "forum.db").exists()
    checked = _run(["check-config"], tmp_path)
    assert (checked.returncode, checked.stdout.strip()) == (0, "configuration OK")


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_signals_shut_down_cleanly(tmp_path: Path, signal_name: str) -> None:
    import signal

    process = subprocess.Popen(
        [sys.executable, "-m", "bot"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")},
    )
    assert process.stdout is not None and process.stdin is not None
    # Wait until the console prints its banner: the bot is up and reading.
    process.stdin.write("/aide\n")
    process.stdin.flush()
    for line in process.stdout:
        if "Bonjour !" in line:
            break
    process.send_signal(getattr(signal, signal_name))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "shutting down" in stderr


def test_health_reports_a_reachable_database(tmp_path: Path) -> None:
    result = _run(["health"], tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "healthy")
    broken = _run(["health"], tmp_path, DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    assert (broken.returncode, broken.stdout.strip()) == (1, "database unreachable")


def test_console_reads_a_regular_file_on_stdin_line_by_line(tmp_path: Path) -> None:
    # `forum-habitant run < conversation.txt`: a file, not a pipe, and no newline at the end.
    script = tmp_path / "conversation.txt"
    script.write_text("/aide\ntg:ouest Bonjour\n/inconnue", encoding="utf-8")
    with script.open("rb") as stdin:
        result = _run(["run"], tmp_path, stdin=stdin, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Bonjour ! Je suis le bot du Forum Habitant de Loos-en-Gohelle." in result.stdout
    assert "Je ne connais pas la commande /inconnue." in result.stdout
    assert "shutting down" in result.stderr


def test_console_with_nothing_on_stdin_stops_at_once(tmp_path: Path) -> None:
    # /dev/null cannot be watched by the event loop either (epoll refuses it).
    result = _run(["run"], tmp_path, stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "shutting down" in result.stderr
