"""``knd evaluate``: metrics of a checkpoint on prepared features, with a per-actor breakdown.

Writes ``metrics.json``, ``confusion.png`` and ``per_actor.csv`` into ``out`` (default: an
``evaluation`` folder beside the checkpoint folder). Features whose manifest hash differs from the
checkpoint's are refused: the model would be fed spectrograms it was not trained on.
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np

from knd.config.loading import to_dict
from knd.config.schema import EvaluateConfig
from knd.data import storage
from knd.data.datasets import key_corpus, speaker_keys
from knd.data.label_sets import DROPPED, checkpoint_label_set
from knd.data.shards import emotion_counts, manifest_actors, manifest_emotions, read_manifest
from knd.data.speakers import speaker_names, speaker_numbers
from knd.learning.checkpoint import load_model
from knd.learning.inference import score_actors
from knd.learning.metrics import metrics_report, split_metrics
from knd.learning.report import read_history, write_report

log = logging.getLogger(__name__)

PER_ACTOR_FILE = "per_actor.csv"


@dataclass(frozen=True)
class EvaluateResult:
    out: str
    metrics: dict
    exit_code: int = 0


def per_actor_rows(preds, targets, actors, num_classes: int, manifest: dict) -> list[dict]:
    """One row per speaker: ``actor`` (its number), ``speaker`` (the corpus's id), ``n``,
    ``accuracy, uar, macro_f1``."""
    rows = []
    for actor in np.unique(actors):
        mask = actors == actor
        m = split_metrics(preds[mask], targets[mask], num_classes)
        row = {"actor": int(actor), "speaker": speaker_names([actor], manifest)[0], "n": m["n"]}
        row |= {k: round(m[k], 6) for k in ("accuracy", "uar", "macro_f1")}
        rows.append(row)
    return rows


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def run(cfg: EvaluateConfig) -> EvaluateResult:
    """Evaluate ``cfg.checkpoint`` on ``cfg.data`` (the checkpoint's test actors by default).

    Raises:
        FileNotFoundError: the checkpoint folder is incomplete.
        ValueError: features made with other parameters, or none of the asked actors present.
    """
    model, meta = load_model(cfg.checkpoint)
    actors = _speakers(cfg, meta)
    scores = score_actors(model, meta, cfg.data, actors, cfg.batch_size)
    table, targets, preds, part = scores.table, scores.targets, scores.preds, scores.metrics
    labels = meta["labels"]
    cross = _cross_corpus(cfg, meta, scores, actors)
    report = metrics_report(
        list(scores.shared or labels),
        test=part,
        val=None,
        test_actors=sorted({int(a) for a in table.actor}),
        test_speakers=speaker_names(sorted({int(a) for a in table.actor}), table.manifest),
        checkpoint=cfg.checkpoint,
        data=cfg.data,
        feature_groups=list(meta["model"].get("groups", ["logmel"])),
        epoch=meta.get("epoch"),
        **({"cross_corpus": cross} if cross else {}),
    )
    out = cfg.out or storage.join(_parent(cfg.checkpoint), "evaluation")
    history = read_history(_parent(cfg.checkpoint))  # the curves of the run that made it
    write_report(out, report, config=to_dict(cfg), history=history, title="knd evaluate")
    rows = per_actor_rows(preds, targets, table.actor, len(labels), table.manifest)
    storage.write_text(storage.join(out, PER_ACTOR_FILE), _csv(rows))
    log.info(
        "evaluated %d clips of actors %s: accuracy %.3f, UAR %.3f, macro-F1 %.3f -> %s",
        part["n"], report["test_actors"], part["accuracy"], part["uar"], part["macro_f1"], out,
    )  # fmt: skip
    return EvaluateResult(out=out, metrics=report)


def _cross_corpus(cfg: EvaluateConfig, meta: dict, scores: Any, actors: tuple[int, ...]) -> dict:
    """What an evaluation on data with other labels than the model's left out (empty when the
    data's labels cover the model's and none of its clips went unscored)."""
    emotions = manifest_emotions(scores.table.manifest)
    labels = checkpoint_label_set(meta)
    counts = emotion_counts(cfg.data, actors)
    left_out = {
        emotions[code - 1]: n
        for code, n in sorted(counts.items())
        if 1 <= code <= len(emotions) and labels.target(emotions[code - 1]) == DROPPED
    }
    if scores.shared is None and not left_out:
        return {}
    if left_out:
        log.info("left out %d clips of labels the model does not know: %s",
                 sum(left_out.values()), left_out)  # fmt: skip
    return {
        "model_labels": list(labels.names),
        "shared_labels": list(scores.shared or labels.names),
        "left_out": left_out,
    }


def _speakers(cfg: EvaluateConfig, meta: dict) -> tuple[int, ...]:
    """The speaker numbers to evaluate: those asked for, else every speaker the checkpoint did not
    train on: its test speakers on a corpus it trained on (alone, or as part of a union), and
    every speaker of any other corpus (none of them seen)."""
    manifest = read_manifest(cfg.data)
    if manifest is None:
        raise FileNotFoundError(f"no prepared features at {cfg.data} (run knd prepare)")
    if cfg.speakers:
        numbers = speaker_numbers(cfg.speakers, manifest, "speakers")
        _warn_if_trained_on(numbers, manifest, meta)
        return numbers
    split, keys = meta.get("split_speakers"), speaker_keys(manifest)
    if split is None or keys is None:  # a checkpoint or features from before speaker keys
        return _speakers_by_checksum(cfg, meta, manifest)
    test = set(split["test"])
    trained_corpora = {key_corpus(k) for part in split.values() for k in part}
    unseen = [n for n, key in keys.items() if key_corpus(key) not in trained_corpora]
    if unseen:
        log.info("%d speakers of %s are of a corpus this checkpoint did not train on: all "
                 "evaluated", len(unseen), cfg.data)  # fmt: skip
    return tuple(sorted(unseen + [n for n, key in keys.items() if key in test]))


def _speakers_by_checksum(cfg: EvaluateConfig, meta: dict, manifest: dict) -> tuple[int, ...]:
    """:func:`_speakers` for a checkpoint without ``split_speakers``: its test speakers on the
    corpus it trained on, else every speaker."""
    trained_on = meta.get("corpus_checksum")
    if trained_on is None or trained_on == manifest.get("corpus_checksum"):
        return tuple(meta["split"]["test"])
    log.info("%s is not the corpus this checkpoint trained on: evaluating every speaker", cfg.data)
    return tuple(manifest_actors(manifest))


def _warn_if_trained_on(numbers: tuple[int, ...], manifest: dict, meta: dict) -> None:
    """Warn when speakers asked for were in the checkpoint's training set (their metrics are
    not a test's)."""
    split, keys = meta.get("split_speakers"), speaker_keys(manifest)
    if split is None or keys is None:
        seen = set(meta["split"]["train"]) & set(numbers)
    else:
        trained = set(split["train"])
        seen = {n for n in numbers if keys.get(n) in trained}
    if seen:
        names = speaker_names(sorted(seen), manifest)
        log.warning("speakers %s were in this checkpoint's training set", names)


def _parent(uri: str) -> str:
    return posixpath.dirname(storage.absolute(str(uri).rstrip("/")))
