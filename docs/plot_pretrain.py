"""Plot a spirl_pretrain.py run from its tensorboard logs: eq. 4's terms and the validation metrics.

    python docs/plot_pretrain.py runs/<run_name> --out docs/pretrain_<name>.png

Without --out the PNG goes to runs/<run_name>/pretrain.png.
"""

from __future__ import annotations

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from plot_sac import check_run_dir  # noqa: E402 (docs/, the script's folder, is on sys.path)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

FIX = "pass a run folder written by spirl_pretrain.py (runs/<run>)"

PANELS = (
    ("reconstruction (eq. 4, 0.5 * MSE)", ["losses/reconstruction"], "log"),
    ("KL(q || N(0, I)) per latent dim", ["losses/kl"], "linear"),
    ("KL(stopgrad q || p_a) per latent dim", ["losses/prior"], "log"),
    ("reconstruction MSE (posterior mean)", ["train/reconstruction_mse", "val/reconstruction_mse"], "log"),
    ("prior NLL of posterior mean [nats/skill]", ["train/prior_nll", "val/prior_nll"], "linear"),
)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=None, help="PNG path (default: <run_dir>/pretrain.png)")
    args = parser.parse_args(argv)
    if (error := check_run_dir(args.run_dir, FIX)) is not None:
        sys.exit(error)
    try:
        events = EventAccumulator(args.run_dir, size_guidance={"scalars": 0})
        events.Reload()
        tags = set(events.Tags()["scalars"])
    except Exception as e:  # unreadable event files
        sys.exit(f"error: cannot read the tensorboard logs in {args.run_dir} ({type(e).__name__}); {FIX}")
    if "losses/total" not in tags:
        hint = "; it is an RL run: use docs/plot_sac.py" if "charts/episodic_return" in tags else f"; {FIX}"
        sys.exit(f"error: {args.run_dir} has no spirl_pretrain.py losses logged (no losses/total){hint}")
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
    for ax, (title, panel_tags, scale) in zip(axes, PANELS):
        for tag in panel_tags:
            if tag in tags:
                points = events.Scalars(tag)
                ax.plot([p.step for p in points], [p.value for p in points], label=tag.split("/")[0])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("gradient step")
        ax.set_yscale(scale)
        if len(panel_tags) > 1 and ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(os.path.basename(os.path.normpath(args.run_dir)), fontsize=10)
    fig.tight_layout()
    out = args.out or os.path.join(args.run_dir, "pretrain.png")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        fig.savefig(out, dpi=110)
    except OSError as e:
        sys.exit(f"error: cannot write {out} ({e.strerror}); pass another --out")
    print(out)


if __name__ == "__main__":
    main()
