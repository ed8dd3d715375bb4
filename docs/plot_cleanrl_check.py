"""baselines/sac.py beside CleanRL's SAC on the same gymnasium tasks: the training episodes' return vs env steps,
mean +- std over seeds, one panel per task, and a markdown table.

    python docs/plot_cleanrl_check.py runs/gym_check --out docs/sac_vs_cleanrl      # .png and .md
    python docs/plot_cleanrl_check.py runs/gym_check --save-curves docs/curves      # also keep the curves in docs/
    python docs/plot_cleanrl_check.py docs/curves/gym_check --out docs/sac_vs_cleanrl   # from kept curves alone

Reads, in the folder given:
- this project's runs as `baselines/sac.py --env <id> --seed <n> --run-name gym_check/<id>__sac__s<n>` names them;
- CleanRL's as its sac_continuous_action.py writes them when started in <folder>/cleanrl:
  cleanrl/runs/<id>__sac_continuous_action__<seed>__<time>/;
- curves that --save-curves wrote (<id>__sac__s<n>.json, <id>__cleanrl__s<n>.json), so a figure survives runs/.
Both scripts log `charts/episodic_return` per training episode at its last env step. A run found twice (a kept curve
and the live run) counts once, as the copy that reached the most env steps. The table's figure is each run's mean
return over the training episodes of its last 10% of env steps, then mean +- std over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

OURS = re.compile(r"(?P<env>[A-Za-z0-9_\-]+-v\d+)__sac__s(?P<seed>\d+)$")
CLEANRL = re.compile(r"(?P<env>[A-Za-z0-9_\-]+-v\d+)__sac_continuous_action__(?P<seed>\d+)__\d+$")
KEPT = re.compile(r"(?P<env>[A-Za-z0-9_\-]+-v\d+)__(?P<impl>sac|cleanrl)__s(?P<seed>\d+)\.json$")
NAMES = {"sac": "baselines/sac.py (this project)", "cleanrl": "CleanRL sac_continuous_action.py"}
COLORS = {"sac": "tab:red", "cleanrl": "tab:blue"}
FIX = (
    "pass the folder of the runs (<id>__sac__s<n>/ and cleanrl/runs/<id>__sac_continuous_action__<n>__<time>/) or a "
    "folder of curves that --save-curves wrote"
)


def read_events(run_dir: str) -> dict | None:
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    if "charts/episodic_return" not in events.Tags()["scalars"]:
        return None
    points = events.Scalars("charts/episodic_return")
    return {"steps": np.array([p.step for p in points]), "values": np.array([p.value for p in points])}


def collect(folder: str) -> dict:
    """{(env id, implementation, seed): curve} from run folders and kept curves in `folder`."""
    found: dict = {}

    def keep(key, curve):
        if (
            curve is not None
            and len(curve["steps"])
            and (key not in found or curve["steps"].max() > found[key]["steps"].max())
        ):
            found[key] = curve

    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if (m := OURS.match(name)) and os.path.isdir(path):
            keep((m["env"], "sac", int(m["seed"])), read_events(path))
        elif m := KEPT.match(name):
            with open(path) as f:
                saved = json.load(f)
            keep((m["env"], m["impl"], int(m["seed"])), {k: np.array(saved[k]) for k in ("steps", "values")})
    cleanrl_runs = os.path.join(folder, "cleanrl", "runs")
    if os.path.isdir(cleanrl_runs):
        for name in sorted(os.listdir(cleanrl_runs)):
            if m := CLEANRL.match(name):
                keep((m["env"], "cleanrl", int(m["seed"])), read_events(os.path.join(cleanrl_runs, name)))
    return found


def save_curve(curve: dict, path: str):
    saved = {"steps": curve["steps"].astype(int).tolist(), "values": np.round(curve["values"], 2).tolist()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(saved, f, separators=(",", ":"))
    os.replace(path + ".tmp", path)


def last_mean(curve: dict, fraction: float = 0.1) -> float:
    """Mean return of the training episodes in the run's last `fraction` of env steps."""
    steps, values = curve["steps"], curve["values"]
    return float(values[steps >= (1 - fraction) * steps.max()].mean())


def bin_edges(last_step: int, bin_size: int) -> np.ndarray:
    """Bins of bin_size env steps up to last_step; an overshoot of under 5% of a bin (the last episode ending past
    the run's budget) joins the last bin instead of making a bin of its own."""
    n_bins = max(1, int(np.ceil((last_step - 0.05 * bin_size) / bin_size)))
    edges = bin_size * np.arange(n_bins + 1)
    edges[-1] = max(edges[-1], last_step)
    return edges


def binned(curve: dict, edges: np.ndarray) -> np.ndarray:
    """Mean return per bin of env steps (NaN where a bin has no episode end)."""
    steps, values = curve["steps"], curve["values"]
    return np.array([values[(steps > a) & (steps <= b)].mean() if ((steps > a) & (steps <= b)).any() else np.nan
                     for a, b in zip(edges[:-1], edges[1:])])  # fmt: skip


def table(found: dict, bin_size: int) -> str:
    lines = [
        "| task | implementation | seeds | env steps | return, last 10% (per seed) "
        f"| mean per {bin_size:,} env steps |",
        "|---|---|---|---|---|---|",
    ]
    for env in sorted({key[0] for key in found}):
        for impl in ("sac", "cleanrl"):
            seeds = sorted(seed for e, i, seed in found if (e, i) == (env, impl))
            if not seeds:
                continue
            curves = [found[(env, impl, seed)] for seed in seeds]
            finals = [last_mean(c) for c in curves]
            reached = min(int(c["steps"].max()) for c in curves)
            edges = bin_edges(max(c["steps"].max() for c in curves), bin_size)
            per_bin = np.nanmean([binned(c, edges) for c in curves], axis=0)
            spread = f" ± {np.std(finals):,.0f}" if len(finals) > 1 else ""
            each = ", ".join(f"{v:,.0f}" for v in finals)
            bins = " / ".join(f"{v:,.0f}" for v in per_bin)
            lines.append(
                f"| {env} | {NAMES[impl]} | {len(seeds)} | {reached:,} | {np.mean(finals):,.0f}{spread} ({each}) "
                f"| {bins} |"
            )
    return "\n".join(lines) + "\n"


def plot(found: dict, out: str, bin_size: int):
    envs = sorted({key[0] for key in found})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.6), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for impl in ("sac", "cleanrl"):
            curves = [c for (e, i, _), c in sorted(found.items()) if (e, i) == (env, impl)]
            if not curves:
                continue
            edges = bin_edges(max(c["steps"].max() for c in curves), bin_size)
            values = np.array([binned(c, edges) for c in curves])
            mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
            ax.plot(edges[1:], mean, color=COLORS[impl], label=f"{NAMES[impl]} ({len(curves)} seeds)")
            if len(curves) > 1:
                ax.fill_between(edges[1:], mean - std, mean + std, color=COLORS[impl], alpha=0.2)
        ax.set(title=env, xlabel="env steps", ylabel="training episodes' return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="runs/gym_check, or a folder of kept curves (docs/curves/gym_check)")
    parser.add_argument("--out", default=None, help="path prefix: <out>.png and <out>.md (default: <folder>/compare)")
    parser.add_argument("--bin", type=int, default=100_000, help="env steps per averaging bin")
    parser.add_argument("--save-curves", default=None, help="also write each run's curve to <dir>/gym_check/")
    args = parser.parse_args(argv)
    if not os.path.exists(args.folder):
        sys.exit(f"error: {args.folder} does not exist; {FIX}")
    if not os.path.isdir(args.folder):
        sys.exit(f"error: {args.folder} is a file, not a folder; {FIX}")
    if args.bin < 1:
        sys.exit(f"error: --bin must be at least 1 env step (got {args.bin})")
    try:
        found = collect(args.folder)
    except Exception as e:  # an unreadable event file or curve file
        sys.exit(f"error: cannot read {args.folder} ({type(e).__name__}: {e}); {FIX}")
    if not found:
        sys.exit(f"error: {args.folder} holds no run of either SAC with charts/episodic_return; {FIX}")
    out = args.out or os.path.join(args.folder, "compare")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    plot(found, out, args.bin)
    text = table(found, args.bin)
    with open(out + ".md", "w") as f:
        f.write(text)
    if args.save_curves:
        for (env, impl, seed), curve in found.items():
            save_curve(curve, os.path.join(args.save_curves, "gym_check", f"{env}__{impl}__s{seed}.json"))
    print(text + f"wrote {out}.png and {out}.md")


if __name__ == "__main__":
    main()
