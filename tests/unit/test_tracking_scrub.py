"""The secret scrubber masks short values and the usual secret-variable names; tracking that is
switched off never imports wandb."""

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


def test_tracking_switched_off_never_imports_wandb(tmp_path):
    """``wandb.enabled=false``, or wandb's own ``WANDB_MODE=disabled``: a no-op tracker, no
    Tune callback, and no ``import wandb`` (half a second in every process)."""
    import os
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from knd.config.loading import load_config\n"
        "from knd.runtime.tracking import start_tracking, wandb_callbacks\n"
        "on = load_config('train', ['data=x']).wandb\n"
        "off = load_config('train', ['data=x', 'wandb.enabled=false']).wandb\n"
        "assert on.enabled and not start_tracking(off, sys.argv[1], 'run', {}).enabled\n"
        "os.environ['WANDB_MODE'] = 'disabled'\n"
        "assert not start_tracking(on, sys.argv[1], 'run', {}).enabled\n"
        "assert wandb_callbacks(on, sys.argv[1]) == []\n"
        "assert 'wandb' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120, env=env)
