"""Any labelled corpus on real local Ray: each public layout and a label table (locally and on
moto's S3) prepared with its own labels and speakers, bad names and rows rejected with their
reasons, and a model trained on one corpus evaluated on another."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from knd.config.loading import load_config
from knd.data.corpora import LAYOUTS
from knd.data.ravdess import EMOTIONS
from knd.data.shards import REJECTED, load_features
from knd.stages.synth import write_corpus

pytestmark = pytest.mark.ray

SPEAKERS = {"crema_d": 2, "emodb": 3, "tess": 2, "savee": 2, "table": 3}
FEATURES = ["features.groups=[logmel]", "features.clip_seconds=1.0", "batch_size=16"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """A small synthetic corpus in every layout (the table's with ``labels.csv`` at its root)."""
    root = tmp_path_factory.mktemp("corpora")
    for layout, speakers in SPEAKERS.items():
        write_corpus(str(root / layout), speakers, workers=2, progress=False, layout=layout)
    return {layout: root / layout for layout in SPEAKERS}


@pytest.fixture(scope="module")
def prepared(corpora, ray_session, tmp_path_factory) -> dict[str, str]:
    """EmoDB's corpus and the label table's, each prepared once with its own labels: the
    features the cross-corpus tests train on and evaluate on (none of them writes there)."""
    root, table = tmp_path_factory.mktemp("prepared"), corpora["table"]
    return {
        "emodb": prepare(corpora["emodb"], root / "emodb", "emodb").output,
        "table": prepare(table, root / "table", str(table / "labels.csv")).output,
    }


def prepare(audio, output, corpus: str, *extra: str):
    from knd.stages.prepare import run

    args = [f"input={audio}", f"output={output}", f"corpus={corpus}", *FEATURES, *extra]
    return run(load_config("prepare", args))


def rejected_rows(output) -> dict[str, str]:
    with open(Path(output) / REJECTED, newline="") as f:
        return {row["path"]: row["reason"] for row in csv.DictReader(f)}


@pytest.mark.parametrize("layout", ["crema_d", "emodb", "tess", "savee"])
def test_each_layout_prepares_its_labels_and_speakers_and_rejects_other_names(
    corpora, layout, ray_session, tmp_path
):
    audio = tmp_path / "audio"
    shutil.copytree(corpora[layout], audio)
    first = sorted(audio.rglob("*.wav"))[0]
    shutil.copy(first, first.with_name("not_a_corpus_name.wav"))  # same audio, unreadable name
    result = prepare(audio, tmp_path / "features", layout)
    manifest = result.manifest
    assert result.exit_code == 0 and manifest["corpus"] == layout
    assert tuple(manifest["emotions"]) == LAYOUTS[layout].labels
    assert len(manifest["speakers"]) == SPEAKERS[layout]
    assert set(manifest["rows_per_emotion"]) == set(LAYOUTS[layout].labels)
    reasons = rejected_rows(result.output)
    bad = str(first.with_name("not_a_corpus_name.wav").relative_to(audio))
    assert list(reasons) == [bad] and LAYOUTS[layout].title in reasons[bad]
    table = load_features(result.output)
    names = {manifest["speakers"][str(a)] for a in table.actor}
    assert len(names) == SPEAKERS[layout] and len(table) == manifest["num_rows"]


def test_a_label_table_labels_opaque_names_and_rejects_each_bad_row(corpora, ray_session, tmp_path):
    audio = tmp_path / "audio"
    shutil.copytree(corpora["table"], audio)
    table = audio / "labels.csv"
    rows = list(csv.DictReader(table.open()))
    rows[0]["speaker"] = ""  # an empty speaker
    rows.append({"path": "clips/missing.wav", "label": "happy", "speaker": "001", "gender": "m"})
    orphan = Path(rows[1]["path"])
    del rows[1]  # its file stays: a file without a row
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label", "speaker", "gender"])
        writer.writeheader()
        writer.writerows(rows)
    result = prepare(audio, tmp_path / "features", str(table), "label_map={surprised: amazed}")
    manifest = result.manifest
    assert manifest["corpus"] == "table" and "amazed" in manifest["emotions"]
    assert "surprised" not in manifest["emotions"]
    assert [manifest["speakers"][k] for k in sorted(manifest["speakers"], key=int)] == [
        "001", "002", "003"
    ]  # fmt: skip
    reasons = rejected_rows(result.output)
    assert len(reasons) == 3
    assert "empty speaker" in reasons[rows[0]["path"]]
    assert "no file" in reasons["clips/missing.wav"]
    assert "no row" in reasons[str(orphan)]
    assert manifest["num_rows"] == len(rows) - 2


def test_a_label_table_on_s3_prepares_to_s3(corpora, ray_session, s3_server):
    from knd.data import storage

    prefix = f"{s3_server.url}/corpora/table"
    for path in sorted(corpora["table"].rglob("*")):
        if path.is_file():
            rel = path.relative_to(corpora["table"]).as_posix()
            storage.write_bytes(f"{prefix}/audio/{rel}", path.read_bytes())
    result = prepare(f"{prefix}/audio", f"{prefix}/features", f"{prefix}/audio/labels.csv")
    assert result.exit_code == 0 and result.num_rejected == 0
    assert result.manifest["corpus"] == "table"
    assert result.manifest["emotions"] == list(EMOTIONS)
    assert len(load_features(f"{prefix}/features")) == result.num_rows


def test_a_model_of_one_corpus_evaluates_on_another_over_the_labels_both_have(prepared, tmp_path):
    from knd.stages.evaluate import run as evaluate
    from knd.stages.train import run as train

    emodb, other = prepared["emodb"], prepared["table"]
    subset = "labels=[happy,sad,angry,boredom]"  # a subset on the training side...
    args = [f"data={emodb}", "recipe=cpu_small", "model.width=8", "optim.epochs=2", subset]
    args += [f"run_dir={tmp_path / 'runs'}", "name=emodb", "wandb.enabled=false"]
    trained = train(load_config("train", args))
    assert trained.metrics["labels"] == ["happy", "sad", "angry", "boredom"]
    assert trained.metrics["test_speakers"] and trained.metrics["test"]["n"] > 0
    # ... and the other corpus has no boredom but calm, neutral, fearful... the model never saw.
    out = tmp_path / "cross"
    result = evaluate(
        load_config("evaluate", [f"checkpoint={trained.checkpoint}", f"data={other}", f"out={out}"])
    )
    metrics = json.loads((out / "metrics.json").read_text())
    cross = metrics["cross_corpus"]
    assert cross["shared_labels"] == ["happy", "sad", "angry"] == metrics["labels"]
    assert set(cross["left_out"]) == {"neutral", "calm", "fearful", "disgust", "surprised"}
    shared_clips = sum(
        n for label, n in load_manifest(other)["rows_per_emotion"].items()
        if label in cross["shared_labels"]
    )  # fmt: skip
    assert result.metrics["test"]["n"] == shared_clips  # every speaker: none was seen
    assert len(metrics["test"]["confusion"]) == 3
    speakers = [r.split(",")[1] for r in (out / "per_actor.csv").read_text().splitlines()[1:]]
    assert speakers == ["001", "002", "003"]  # the table's ids, per speaker


def load_manifest(folder) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def test_two_corpora_train_as_one_with_speakers_namespaced_and_metrics_per_corpus(
    prepared, tmp_path
):
    from knd.stages.train import run as train

    both = f"data=[{prepared['emodb']},{prepared['table']}]"
    args = [both, "recipe=cpu_small", "model.width=8", "optim.epochs=2", "wandb.enabled=false"]
    args += [f"run_dir={tmp_path / 'runs'}", "name=both"]
    trained = train(load_config("train", args))
    metrics = trained.metrics
    # The union's labels: the table's eight (RAVDESS's) and EmoDB's boredom, in vocabulary order.
    assert metrics["labels"] == [*EMOTIONS, "boredom"]
    tested = {s.split("/")[0] for s in metrics["test_speakers"]}
    assert tested and tested <= {"emodb", "table"}  # the table's corpus is named by its folder
    per_corpus = metrics["test"]["per_corpus"]
    assert set(per_corpus) == tested
    assert sum(c["n"] for c in per_corpus.values()) == metrics["test"]["n"]
    assert "## Per corpus" in (Path(trained.run_dir) / "report.md").read_text()
    # Evaluated on one of its corpora alone, the checkpoint still knows which speakers it trained
    # on there: only that corpus's test speakers are evaluated.
    from knd.stages.evaluate import run as evaluate

    corpus = sorted(tested)[0]
    part = prepared[corpus]
    on_part = [f"checkpoint={trained.checkpoint}", f"data={part}", f"out={tmp_path / 'alone'}"]
    alone = evaluate(load_config("evaluate", on_part))
    there = [s.split("/", 1)[1] for s in metrics["test_speakers"] if s.startswith(f"{corpus}/")]
    assert alone.metrics["test_speakers"] == there
    # Speakers are named <corpus>/<id> on the command line too.
    from knd.learning.feed import load_split

    named = load_split(load_config("train", [*args, "split.test_speakers=[emodb/03]"]))
    assert named.split.test == (3,) and 3 not in named.split.train


def test_corpora_prepared_with_other_feature_parameters_are_refused_together(
    corpora, prepared, tmp_path
):
    from knd.stages.train import run as train

    other = prepare(corpora["tess"], tmp_path / "tess", "tess", "features.n_mels=32").output
    args = [f"data=[{prepared['emodb']},{other}]", "recipe=cpu_small", "wandb.enabled=false"]
    with pytest.raises(ValueError, match="made with other parameters than"):
        train(load_config("train", [*args, f"run_dir={tmp_path / 'runs'}"]))
