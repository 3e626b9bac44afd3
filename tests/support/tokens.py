"""API tokens made the way an operator makes them: with the ``adamp-tune token`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI = str(Path(sys.executable).with_name("adamp-tune"))


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``adamp-tune ARGS`` with ``env``; the caller checks the outcome."""
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, check=False, timeout=60
    )


def make_tokens(database_url: str, users: dict[str, list[str]]) -> dict[str, str]:
    """One token per user (with the given extra CLI flags); a user named ``revoked`` has
    its token revoked right after it is made."""
    env = {**os.environ, "ADAMP_TUNE_DATABASE_URL": database_url}
    tokens: dict[str, str] = {}
    for user, flags in users.items():
        made = cli(env, "token", "create", user, *flags)
        assert made.returncode == 0, made.stderr
        tokens[user] = made.stdout.strip().splitlines()[-1]
        assert tokens[user].startswith("at_")
        if user == "revoked":
            gone = cli(env, "token", "revoke", tokens[user][:10])
            assert gone.returncode == 0, gone.stderr
    return tokens
