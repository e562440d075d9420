"""Which deal stages are closed, won or lost: the deal pipelines API decides, not the stage name.

``closedwon``/``closedlost`` exist only in the default pipeline; custom pipelines use numeric
stage ids. A stage is closed when its ``metadata.isClosed`` is "true", won when its
``metadata.probability`` is "1.0". The pipelines are read once and read again when a stage id
we do not know shows up (a pipeline added or edited since).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapters.hubspot.records import Stage


class StageBook:
    def __init__(self, read_pipelines: Callable[[], list[Any]]) -> None:
        self._read = read_pipelines
        self._stages: dict[str, Stage] | None = None

    def get(self, stage_id: str | None) -> Stage | None:
        """The stage, refreshing the pipelines once if the id is unknown; None if it stays unknown."""
        if not stage_id:
            return None
        if self._stages is None or stage_id not in self._stages:
            self._stages = _stages(self._read())
        return self._stages.get(stage_id)


def _stages(pipelines: list[Any]) -> dict[str, Stage]:
    found = {}
    for pipeline in pipelines:
        for stage in pipeline.stages or []:
            metadata = stage.metadata or {}
            found[str(stage.id)] = Stage(
                id=str(stage.id),
                label=stage.label,
                pipeline_id=str(pipeline.id),
                pipeline_label=pipeline.label,
                closed=str(metadata.get("isClosed", "")).lower() == "true",
                won=_probability(metadata.get("probability")) == 1.0,
            )
    return found


def _probability(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
