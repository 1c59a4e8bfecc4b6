"""The documentation site: generated pages list what the code accepts, and the build is strict."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from knd.cli import main
from knd.config.commands import COMMANDS
from knd.config.keys import command_keys
from knd.config.loading import load_config
from knd.docs import benchmarks_markdown, cli_reference, fill_defaults

REPO = Path(__file__).resolve().parents[2]
MKDOCS = str(Path(sys.executable).with_name("mkdocs"))


def reference_sections() -> dict[str, str]:
    text = cli_reference()
    parts = re.split(r"^## `knd (\w+)`$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def help_defaults(command: str, capsys) -> dict[str, str]:
    """``{key: default}`` as ``knd <command> --help`` prints them (``required`` for none)."""
    assert main([command, "--help"]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  "):
            name, default, _ = re.split(r" {2,}", line.strip(), maxsplit=2)
            rows[name] = "required" if default == "(required)" else default
    return rows


def page_defaults(section: str) -> dict[str, str]:
    """``{key: default}`` as a command's section of the Command line page shows them."""
    rows = {}
    for name, default in re.findall(r"^\| `([\w.]+)` \| .*? \| (\*\*required\*\*|`[^`]*`) \|",
                                    section, flags=re.M):  # fmt: skip
        rows[name] = "required" if default == "**required**" else default.strip("`")
    return rows


def test_cli_reference_shows_the_defaults_that_help_shows_for_every_key(capsys):
    sections = reference_sections()
    assert list(sections) == list(COMMANDS)
    for command, section in sections.items():
        helped = help_defaults(command, capsys)
        assert list(helped) == [k.name for k in command_keys(command)], command
        assert page_defaults(section) == helped, command
    # The default recipe is applied on both (the page once showed the schema without it).
    train = sections["train"]
    assert "| `model.name` | " in train and help_defaults("train", capsys)["model.name"] == (
        load_config("train", ["data=x"]).model.name
    )
    assert page_defaults(train)["split.val_speakers"] == "[]"
    assert "| `optim.lr` | float (`0 < x <= 10`) | `0.003` | peak learning rate (AdamW) |" in train
    assert "| `data` | str or list of str or none | **required** |" in train
    assert "| `labels` | list of str | `all` |" in train


def test_help_gives_each_key_its_type_and_range(capsys):
    assert main(["train", "--help"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
             if line.startswith("  ")}  # fmt: skip
    assert lines["split.test_speakers"].endswith("[list of str or none]")
    assert lines["optim.schedule"].endswith("[cosine | onecycle]")
    assert lines["name"].endswith("[str or none; a plain name]")
    assert lines["train.max_failures"].endswith("[int; x >= -1]")


def test_a_default_stated_in_prose_is_the_one_help_shows(capsys):
    text = "val <!-- knd:default train split.val_speakers --> and <!-- knd:default tune folds -->."
    tune_folds = help_defaults("tune", capsys)["folds"]
    assert fill_defaults(text) == f"val `[]` and `{tune_folds}`."
    with pytest.raises(KeyError, match="has no key 'split.nope'"):
        fill_defaults("<!-- knd:default train split.nope -->")
    # Every marker on every page names a real key; the Concepts page says what a plain run does.
    for page in (REPO / "docs").rglob("*.md"):
        assert "<!-- knd:default" not in fill_defaults(page.read_text()), page
    concepts = fill_defaults((REPO / "docs" / "concepts.md").read_text())
    assert "`split.val_speakers` (default `[]`)" in concepts
    assert "`train.checkpoint_metric` (default `val_loss`" in concepts


def test_the_pipeline_diagram_is_mermaid_and_one_picture_in_readme_and_home_page():
    def mermaid(path: Path) -> list[str]:
        return re.findall(r"^```mermaid\n(.*?)^```$", path.read_text(), flags=re.M | re.S)

    home, readme = mermaid(REPO / "docs" / "index.md"), mermaid(REPO / "README.md")
    assert len(home) == 1 and home == readme
    assert "knd prepare · Ray tasks" in home[0]
    fences = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    superfences = next(e for e in fences["markdown_extensions"] if "pymdownx.superfences" in e)
    custom = superfences["pymdownx.superfences"]["custom_fences"]
    assert {"name": "mermaid", "class": "mermaid"}.items() <= custom[0].items()


def test_benchmarks_page_has_every_result_file_and_its_machine(tmp_path):
    results = {
        "a.json": {"command": "python bench/a.py", "machine": {"cpus": 2}, "ratio": 1.2345},
        "b.json": {"device": "gpu", "config": {"lr": 1}, "seconds": [1.0, 2.0]},
    }
    for name, data in results.items():
        (tmp_path / name).write_text(json.dumps(data))
    page = benchmarks_markdown(tmp_path)
    assert "### `a.json`" in page and "python bench/a.py" in page and "machine.cpus 2" in page
    assert "| `ratio` | 1.234 |" in page and "| `seconds` | 1, 2 |" in page
    assert "Machine: device gpu" in page and "config.lr" not in page
    shipped = benchmarks_markdown(REPO / "bench" / "results")
    for path in (REPO / "bench" / "results").glob("*.json"):
        assert f"### `{path.name}`" in shipped


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)

    def pages(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from pages(value)
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        else:
            yield node

    listed = set(pages(config["nav"]))
    on_disk = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")}
    assert listed == on_disk


def build(docs_root: Path, out: Path) -> subprocess.CompletedProcess:
    env_cmd = [MKDOCS, "build", "--strict", "-f", str(docs_root / "mkdocs.yml"),
               "-d", str(out)]  # fmt: skip
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(env_cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_site_builds_strict_and_a_broken_link_fails_it(tmp_path):
    result = build(REPO, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    cli_page = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "train.num_workers" in cli_page and "features.n_mels" in cli_page
    api_page = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "split_metrics" in api_page
    home = (tmp_path / "site" / "index.html").read_text()
    assert '<pre class="mermaid">' in home and "──▶" not in home
    concepts = (tmp_path / "site" / "concepts" / "index.html").read_text()
    assert "knd:default" not in concepts and "<code>val_loss</code>" in concepts

    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy2(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copytree(REPO / "docs", copy / "docs")
    (copy / "knd").symlink_to(REPO / "knd")
    page = copy / "docs" / "concepts.md"
    page.write_text(page.read_text() + "\nSee [a page that is not there](nowhere.md).\n")
    broken = build(copy, tmp_path / "broken")
    assert broken.returncode != 0 and "nowhere.md" in broken.stderr


def test_pages_workflow_builds_with_make_docs_and_deploys_only_from_main():
    path = REPO / ".github" / "workflows" / "docs.yml"
    lint = subprocess.run([str(Path(sys.executable).with_name("actionlint")), str(path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr
    workflow = yaml.safe_load(path.read_text())
    jobs = workflow["jobs"]
    assert any(step.get("run") == "make docs" for step in jobs["build"]["steps"])
    assert "refs/heads/main" in jobs["deploy"]["if"] and "push" in jobs["deploy"]["if"]
    assert jobs["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}
    makefile = (REPO / "Makefile").read_text()
    assert "mkdocs build --strict" in makefile and "--quiet" not in makefile  # -q hides warnings
    assert re.search(r"^test: .*\bdocs\b", makefile, flags=re.M)
