"""The one post-fit step: the kept checkpoint scored on its held-out actors, and its report.

``knd train`` (its kept checkpoint, on the validation and test actors) and ``knd tune`` (the best
configuration retrained on every non-test actor, on the test actors, read only now) end the same
way: score the checkpoint with :func:`knd.learning.inference.score_actors`, write
``metrics.json``, the figures and the report beside it (:func:`knd.learning.report.write_report`).
"""

from __future__ import annotations

from collections.abc import Sequence

from knd.data.speakers import speaker_names
from knd.learning.checkpoint import load_model
from knd.learning.inference import score_actors
from knd.learning.metrics import metrics_report
from knd.learning.report import write_report


def score_and_report(
    folder: str,
    checkpoint: str,
    data: str,
    test_actors: Sequence[int],
    val_actors: Sequence[int] = (),
    *,
    facts: dict | None = None,
    config: dict | None = None,
    history: Sequence[dict] | None = None,
    title: str | None = None,
) -> dict:
    """Score ``checkpoint`` on the test (and validation) actors of ``data``; write the report.

    Args:
        folder: where ``metrics.json``, the figures and ``report.md``/``report.html`` go.
        checkpoint: the kept checkpoint folder.
        data: the prepared features it is scored on (the groups it was trained on, checked).
        test_actors: the held-out test actors.
        val_actors: validation actors (none: ``val`` is null in ``metrics.json``).
        facts: the run's own ``metrics.json`` keys (split, recipe, epochs...), in order; the
            model's ``feature_groups`` and the ``checkpoint`` follow them.
        config: the run's config, for the report.
        history: the run's epoch records, for the report's curves.
        title: the report's title.

    Returns:
        The ``metrics.json`` document.
    """
    model, meta = load_model(checkpoint)
    val = score_actors(model, meta, data, val_actors).metrics if val_actors else None
    scored = score_actors(model, meta, data, test_actors)
    report = metrics_report(
        meta["labels"],
        test=scored.metrics,
        val=val,
        test_actors=test_actors,
        test_speakers=speaker_names(test_actors, scored.table.manifest),
        **(facts or {}),
        feature_groups=list(meta["model"].get("groups", ["logmel"])),
        checkpoint=checkpoint,
    )
    write_report(folder, report, config=config, history=history, title=title)
    return report
