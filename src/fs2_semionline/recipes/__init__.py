"""fairseq2 recipes of the package; each module runs with ``python -m`` too."""

from __future__ import annotations

from typing import Any

from fairseq2.task import Task


def run_cli(recipe: Any) -> None:
    """fairseq2's own recipe CLI (config file, --config overrides, errors, exit codes)."""
    from fairseq2.recipe.cli import main

    main(recipe)


class ClosingTask(Task):
    """A fairseq2 Task that also closes what the recipe started (actors, pools, Ray).

    fairseq2's task runner calls ``close()`` after ``run()`` however it ends (finished,
    stopped, raised), so generator actors and worker pools never outlive their run.
    """

    def __init__(self, task: Any, closables: list[Any]) -> None:
        self._task = task
        self._closables = closables

    def run(self) -> None:
        self._task.run()

    def request_stop(self) -> None:
        self._task.request_stop()

    @property
    def step_nr(self) -> int:
        return int(self._task.step_nr)

    def close(self) -> None:
        try:
            self._task.close()
        finally:
            self.close_all(self._closables)

    @staticmethod
    def close_all(closables: list[Any]) -> None:
        """Closes each once, in order, even if one of them fails."""
        errors = []
        while closables:
            item = closables.pop(0)
            try:
                item.close()
            except Exception as err:  # noqa: BLE001 - the others must still close
                errors.append(err)
        if errors:
            raise errors[0]
