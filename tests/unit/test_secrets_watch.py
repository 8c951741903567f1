"""The integration session's end check finds a secret in a log, and only the secret (never a name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import secrets_watch


def test_a_key_in_a_log_is_found_and_a_name_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets_watch, "_watched", [])
    keys_file = tmp_path / "keys"
    keys_file.write_text("# comment\nfile-bot:sk-from-the-file-1234\n")
    clean, leaky = tmp_path / "clean.log", tmp_path / "leaky.log"
    clean.write_text("REQUEST END GET /image 200 1.0ms owner=alice\n")
    leaky.write_text("oops sk-alice-secret-1234 and sk-from-the-file-1234 and whsec_c2VjcmV0LXNlY3JldA==\n")
    env = {
        "PIXYPROXY_API_KEYS": "alice:sk-alice-secret-1234, sk-bare-key-5678",
        "PIXYPROXY_API_KEYS_FILE": str(keys_file),
        "PIXYPROXY_WEBHOOK_SECRET": "whsec_c2VjcmV0LXNlY3JldA==",
        "OPENAI_API_KEY": "x",  # too short to tell from ordinary text: not watched
    }
    secrets_watch.watch(clean, env)
    secrets_watch.watch(leaky, env)
    assert sorted(secrets_watch.leaks()) == [
        f"{leaky}: a value of PIXYPROXY_API_KEYS",
        f"{leaky}: a value of PIXYPROXY_API_KEYS_FILE",
        f"{leaky}: a value of PIXYPROXY_WEBHOOK_SECRET",
    ]
