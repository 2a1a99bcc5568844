"""A rich progress display across trials and folds (folds advance epoch by epoch).

>>> bar = SearchProgress(None, folds=3, trials=10)  # doctest: +SKIP
>>> bar.trial_started(0); bar.fold_done(0); bar.trial_done(completed=1); bar.stop()  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nnfin.train.callbacks import Callback


class _EpochTicker(Callback):
    """Moves the fold bar by a fraction of a fold after each epoch."""

    def __init__(self, owner: SearchProgress, fold: int) -> None:
        self.owner, self.fold = owner, fold

    def on_epoch_end(self, trainer: Any, logs: dict[str, float]) -> None:
        frac = min(1.0, trainer.state.epoch / max(1, trainer.max_epochs))
        self.owner.progress.update(self.owner.fold_task, completed=self.fold + frac,
                                   info=f"fold {self.fold + 1}  loss {logs['train_loss']:.2e}")


class _StackTicker(Callback):
    """Moves the fold bar through a stack's epochs (every fold of the batch trains at once)."""

    def __init__(self, owner: SearchProgress) -> None:
        self.owner = owner

    def on_epoch_begin(self, trainer: Any) -> None:
        frac = min(1.0, trainer.state.epoch / max(1, trainer.max_epochs))
        task = self.owner.fold_task
        total = self.owner.progress.tasks[task].total or 1
        self.owner.progress.update(task, completed=total * frac,
                                   info=f"epoch {trainer.state.epoch + 1}  "
                                        f"{len(trainer.rows)} networks training")


class SearchProgress:
    """Two bars: trials completed (of the budget, counting every worker's) and folds."""

    def __init__(self, console: Any = None, *, folds: int, trials: int | None = None,
                 completed: int = 0) -> None:
        self.progress = Progress(TextColumn("[bold]{task.description}[/bold]"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.trial_task = None
        if trials is not None:
            self.trial_task = self.progress.add_task("trials", total=trials, completed=completed,
                                                     info="")
        self.fold_task = self.progress.add_task("folds ", total=folds, info="")
        self.progress.start()

    def epoch_callback(self, fold: int) -> Callback:
        """A training callback that advances the fold bar within fold ``fold``."""
        if fold == 0:
            self.progress.reset(self.fold_task, info="")
        return _EpochTicker(self, fold)

    def stack_callback(self) -> Callback:
        """A training callback that advances the fold bar through a stack's epochs."""
        self.progress.reset(self.fold_task, info="")
        return _StackTicker(self)

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        if self.trial_task is not None:
            shown = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in params.items())
            self.progress.update(self.trial_task, info=f"#{number}: {shown}")

    def trials_started(self, numbers: list[int], params: list[dict[str, Any]]) -> None:
        """Trials that train together: one is shown with its values, a batch by its numbers."""
        if len(numbers) == 1:
            self.trial_started(numbers[0], params[0])
        elif self.trial_task is not None:
            self.progress.update(self.trial_task, info=f"#{min(numbers)}-#{max(numbers)}: "
                                 f"{len(numbers)} trials together")

    def trial_done(self, completed: int, best: float | None = None) -> None:
        if self.trial_task is not None:
            info = "" if best is None else f"best {best:.4g}"
            self.progress.update(self.trial_task, completed=completed, info=info)

    def stop(self) -> None:
        self.progress.stop()
