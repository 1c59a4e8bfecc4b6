"""The secret scrubber masks short values and the usual secret-variable names."""

from __future__ import annotations

import pytest

from knd.runtime.tracking import MASK, is_secret_name, scrub


@pytest.mark.parametrize(
    "name",
    ["MY_PASS", "DB_PASSWORD", "GITHUB_TOKEN", "APP_SECRET", "API_KEY", "WANDB_API_KEY",
     "AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "my_passwd", "SMTP_PWD", "GOOGLE_CREDENTIALS"],
)  # fmt: skip
def test_secret_looking_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PWD", "OLDPWD", "HOME", "PATH", "AWS_REGION", "WANDB_MODE"])
def test_ordinary_names(name):
    assert not is_secret_name(name)


def test_short_and_long_secret_values_are_masked(monkeypatch):
    monkeypatch.setenv("MY_PASS", "hunter")  # 6 characters: skipped before
    monkeypatch.setenv("PIN_PASSWORD", "4242")  # 4 characters
    monkeypatch.setenv("X_TOKEN", "q")  # 1 character: masked where a whole value equals it
    out = scrub(
        {
            "url": "https://me:hunter@host/",
            "note": "pin 4242 ok",
            "flag": "q",
            "list": ["hunter", "quiet"],
            "nested": {"db_password": "zz", "token_count": 3},
        }
    )
    assert out["url"] == f"https://me:{MASK}@host/"
    assert out["note"] == f"pin {MASK} ok"
    assert out["flag"] == MASK
    assert out["list"] == [MASK, "quiet"]  # a 1-character secret does not mangle other text
    assert out["nested"] == {"db_password": MASK, "token_count": 3}


def test_values_of_ordinary_variables_are_kept(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("EMPTY_TOKEN", "")
    assert scrub({"region": "us-east-1", "s": ""}) == {"region": "us-east-1", "s": ""}
