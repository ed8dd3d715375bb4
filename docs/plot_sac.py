"""Plot a spirl_sac.py run from its tensorboard logs: task progress (kitchen subtasks, maze success)
vs env steps, and how alpha and KL(pi || p_a) were tuned.

    python docs/plot_sac.py runs/<run_name> --out docs/sac_<name>.png
"""

from __future__ import annotations

import argparse
import os
import sys

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

FIX = "pass a run folder written by spirl_sac.py (runs/<run>)"


def has_events(folder: str) -> bool:
    """Whether `folder` holds tensorboard event files (not looking into subfolders, as tensorboard)."""
    try:
        return any(name.startswith("events.out.tfevents") for name in os.listdir(folder))
    except OSError:
        return False


def check_run_dir(run_dir: str, fix: str) -> str | None:
    """None when run_dir holds tensorboard event files, else the one-line error (with `fix`)."""
    if not os.path.exists(run_dir):
        return f"error: {run_dir} does not exist; {fix}"
    if not os.path.isdir(run_dir):
        parent = os.path.dirname(os.path.normpath(run_dir)) or "."
        return f"error: {run_dir} is a file, not a run folder; " + (f"pass {parent}" if has_events(parent) else fix)
    try:
        subfolders = [os.path.join(run_dir, d) for d in sorted(os.listdir(run_dir))]
    except OSError as e:
        return f"error: cannot read {run_dir} ({e.strerror}); {fix}"
    if has_events(run_dir):
        return None
    runs = [d for d in subfolders if os.path.isdir(d) and has_events(d)]
    if runs:  # e.g. runs/ itself, or a sweep folder
        return f"error: {run_dir} has no tensorboard logs of its own; pass one of its run folders, e.g. {runs[0]}"
    return f"error: {run_dir} has no tensorboard logs; {fix}"


def series(events, tag):
    points = events.Scalars(tag)
    return np.array([p.step for p in points]), np.array([p.value for p in points])


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=None, help="PNG path (default: <run_dir>/sac.png)")
    parser.add_argument("--window", type=int, default=50, help="training episodes per moving average")
    args = parser.parse_args(argv)
    if args.window < 1:
        sys.exit(f"error: --window must be at least 1 (got {args.window})")
    if (error := check_run_dir(args.run_dir, FIX)) is not None:
        sys.exit(error)
    try:
        events = EventAccumulator(args.run_dir, size_guidance={"scalars": 0})
        events.Reload()
        tags = set(events.Tags()["scalars"])
    except Exception as e:  # unreadable event files
        sys.exit(f"error: cannot read the tensorboard logs in {args.run_dir} ({type(e).__name__}); {FIX}")
    # The env's progress figure: kitchen subtasks, maze success (envs/registry.py's progress_metric).
    metric = next((m for m in ("subtasks_completed", "success", "blocks_stacked") if f"charts/{m}" in tags), None)
    if metric is None:
        hint = "; it is a spirl_pretrain.py run: use docs/plot_pretrain.py" if "losses/total" in tags else f"; {FIX}"
        sys.exit(f"error: {args.run_dir} has no spirl_sac.py episodes logged (no charts/subtasks_completed, "
                 f"charts/success or charts/blocks_stacked){hint}")  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    steps, progress = series(events, f"charts/{metric}")
    axes[0].plot(steps, progress, ".", ms=1.5, alpha=0.25, color="tab:blue")
    smooth = moving_average(progress, args.window)
    axes[0].plot(steps[len(steps) - len(smooth):], smooth, color="tab:blue",
                 label=f"training episodes ({args.window}-episode mean)")  # fmt: skip
    if f"charts/eval_{metric}" in tags:
        axes[0].plot(*series(events, f"charts/eval_{metric}"), "o-", color="tab:red", ms=4,
                     label="evaluation (policy mean)")  # fmt: skip
    title = {"subtasks_completed": "subtasks completed per episode", "success": "success rate (goal reached)"}
    axes[0].set_title(title.get(metric, metric.replace("_", " ")), fontsize=9)
    axes[0].legend(fontsize=7)
    for ax, tag, title, scale in ((axes[1], "charts/alpha", "alpha", "log"),
                                  (axes[2], "charts/kl_to_prior", "KL(pi || p_a), batch mean", "linear")):  # fmt: skip
        if tag in tags:
            ax.plot(*series(events, tag))
        ax.set_title(title, fontsize=9)
        ax.set_yscale(scale)
    for ax in axes:
        ax.set_xlabel("env steps")
    fig.suptitle(os.path.basename(os.path.normpath(args.run_dir)), fontsize=10)
    fig.tight_layout()
    out = args.out or os.path.join(args.run_dir, "sac.png")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        fig.savefig(out, dpi=110)
    except OSError as e:
        sys.exit(f"error: cannot write {out} ({e.strerror}); pass another --out")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
