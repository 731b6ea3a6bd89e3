"""A live loss plot for notebooks: one small matplotlib figure, redrawn in place after every epoch.

Used by :func:`hemolab.training.fit` with ``live_plot=True``. It is cheap: a single figure is kept and
redrawn into one IPython display handle (no new output cell per epoch); outside IPython it does nothing.
"""

from __future__ import annotations

import math


def plot_history(history, ax=None, *, title: str | None = None, show_lr: bool = True):
    """Draw train (solid) / validation (dashed) loss per epoch, and the learning rate on a second (log) axis.

    The line styles follow Arab 2020's Fig. 3 (train solid, validation dashed). Epochs where the learning rate was lowered are marked with dotted vertical lines, and the best
    epoch with a star, so the schedule of Arab 2020 ("Training") can be seen on the curve.

    Args:
        history: a :class:`hemolab.training.History` (or anything with ``.rows``, ``.best_epoch``,
            ``.lr_reductions``) or a DataFrame with the history columns.
        ax: the matplotlib axes to draw into (``None`` = a new figure).
        title: the axes title.
        show_lr: draw the learning rate on a right-hand axis.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if hasattr(history, "rows"):
        rows = history.rows
        best = history.best_epoch
        cuts = list(history.lr_reductions)
    else:  # a DataFrame
        rows = history.to_dict("records")
        best = int(history.loc[history["val_loss"].idxmin(), "epoch"]) if len(history) else None
        lrs = list(history["lr"])
        cuts = [int(history["epoch"].iloc[i - 1]) for i in range(1, len(lrs)) if lrs[i] < lrs[i - 1]]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 3.2), layout="constrained")
    else:
        fig = ax.figure
    ax.clear()
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["train_loss"] for r in rows], "-", color="C0", label="train loss")
    ax.plot(epochs, [r["val_loss"] for r in rows], "--", color="C1", label="validation loss")
    if best is not None and rows:
        val_best = next(r["val_loss"] for r in rows if r["epoch"] == best)
        ax.plot([best], [val_best], "*", color="C3", ms=12, label=f"best epoch ({best})")
    for i, e in enumerate(cuts):
        ax.axvline(e + 0.5, color="grey", ls=":", lw=1, label="learning rate halved" if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("soft Dice loss")
    if title:
        ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if show_lr and rows:
        ax2 = getattr(ax, "_hemolab_lr_axis", None)
        if ax2 is None:
            ax2 = ax.twinx()
            ax._hemolab_lr_axis = ax2
        ax2.clear()
        lrs = [r["lr"] for r in rows]
        ax2.step(epochs, lrs, where="mid", color="grey", alpha=0.6, label="learning rate")
        if all(lr > 0 and math.isfinite(lr) for lr in lrs):
            ax2.set_yscale("log")
        ax2.yaxis.tick_right()
        ax2.yaxis.set_label_position("right")
        ax2.set_ylabel("learning rate", color="grey")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="upper right", fontsize="small")
    return fig


class LivePlot:
    """Loss curves in a notebook, updated in place after every epoch (does nothing outside IPython)."""

    def __init__(self, max_epochs: int | None = None, title: str = "training"):
        self.max_epochs = max_epochs
        self.title = title
        self._handle = None
        self._fig = None
        try:
            from IPython import get_ipython

            self._active = get_ipython() is not None
        except ImportError:  # pragma: no cover
            self._active = False

    def update(self, history) -> None:
        """Redraw the curves for ``history``."""
        if not self._active or not history.rows:
            return
        import matplotlib.pyplot as plt
        from IPython.display import display

        if self._fig is None:
            self._fig, self._ax = plt.subplots(figsize=(6.5, 3.2), layout="constrained")
            plt.close(self._fig)  # keep the inline backend from showing it a second time
        plot_history(history, self._ax, title=self.title)
        if self.max_epochs:
            self._ax.set_xlim(0.5, max(self.max_epochs, history.epochs) + 0.5)
        if self._handle is None:
            self._handle = display(self._fig, display_id=True)
        else:
            self._handle.update(self._fig)

    def close(self) -> None:
        """Release the figure (the last drawing stays in the notebook)."""
        if self._fig is not None:
            import matplotlib.pyplot as plt

            plt.close(self._fig)
        self._fig = None
