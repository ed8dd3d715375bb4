"""Fig. 4 of the paper from a sweep's runs: task progress vs env steps, mean +- std over seeds, one PNG
per env, and a markdown table of the final figures.

    python docs/plot_fig4.py runs/<sweep name> --out docs/fig4        # docs/fig4_<env>.png + docs/fig4.md
    python docs/plot_fig4.py runs/kitchen_fig4 runs/block_fig4 --out docs/fig4    # several sweeps, one table
    python docs/plot_fig4.py runs/maze_fig4 --save-curves docs/curves         # also keep each run's curve in docs/
    python docs/plot_fig4.py docs/curves/maze_fig4 runs/maze_fig4 --out docs/fig4m   # kept curves and live runs
    python docs/plot_fig4.py docs/curves/kitchen_fig4 "docs/curves/kitchen_fig4_open_loop=open-loop decoder"

Reads runs/<sweep>/<env>__<method>__s<seed>[__<flag><value>...]/ as sweep.py names them; runs that
differ only in the seed form one curve. --save-curves writes what it read of each run (its training
episodes, evaluations and minutes) to <dir>/<sweep>/<run>.json, a few tens of KB that can go into git, and
a folder of such files can be passed instead of a sweep: so a figure survives its runs/ folder, and runs
made over several sessions or machines join one figure. A run found twice (a kept curve and the live run,
or two exports) counts once, as the copy that reached the most env steps. `<folder>=<variant>` adds a variant
to every run read from that folder, so a sweep of another model (say, another decoder) draws as its own curve,
dashed, beside the runs of the same names from other folders.

The curve is the training episodes' progress figure (kitchen: subtasks completed, maze: success, block
stacking: blocks stacked) averaged in bins of --bin env steps per run, then mean +- std over the runs of a
curve (the band is absent with one seed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import warnings

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

METRIC = {"kitchen": "subtasks_completed", "maze": "success", "block_stacking": "blocks_stacked"}
Y_LABEL = {"kitchen": "subtasks completed", "maze": "success rate", "block_stacking": "blocks stacked"}
TITLE = {"kitchen": "Kitchen Environment", "maze": "Maze Navigation", "block_stacking": "Block Stacking"}
# The paper's legend order and names.
METHODS = {"spirl": "SPiRL (ours)", "ssp": "SSP w/o Prior", "flat_prior": "Flat Prior", "bc_sac": "BC + SAC",
           "sac": "SAC"}  # fmt: skip
COLORS = {"spirl": "tab:red", "ssp": "tab:blue", "flat_prior": "tab:orange", "bc_sac": "tab:green", "sac": "tab:gray"}
RUN_NAME = re.compile(r"(?P<env>[a-z_]+?)__(?P<method>[a-z_]+?)__s(?P<seed>\d+)(?P<variant>(__.+)?)$")


def read_run(run_dir: str, metric: str) -> dict | None:
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    if f"charts/{metric}" not in tags:
        return None
    train = events.Scalars(f"charts/{metric}")
    evals = events.Scalars(f"charts/eval_{metric}") if f"charts/eval_{metric}" in tags else []
    # Time spent: tensorboard's wall clock between consecutive training episodes, leaving out gaps of
    # over 10 min (a run stopped and resumed later), so it also works for runs started by hand.
    gaps = np.diff([p.wall_time for p in train])
    seconds = float(gaps[gaps < 600].sum()) if len(gaps) else None
    return {"steps": np.array([p.step for p in train]), "values": np.array([p.value for p in train]),
            "eval_steps": np.array([p.step for p in evals]), "eval_values": np.array([p.value for p in evals]),
            "seconds": seconds}  # fmt: skip


def read_curve(path: str) -> dict:
    """A run's curve as --save-curves wrote it (see save_curve)."""
    with open(path) as f:
        saved = json.load(f)
    return {key: np.array(saved[key]) for key in ("steps", "values", "eval_steps", "eval_values")} | {
        "seconds": saved["seconds"]
    }


def save_curve(run: dict, path: str):
    """Write a run's curve as JSON (env steps as integers, values to 4 decimals), through a temporary file."""
    saved = {"steps": run["steps"].astype(int).tolist(), "values": np.round(run["values"], 4).tolist(),
             "eval_steps": run["eval_steps"].astype(int).tolist(),
             "eval_values": np.round(run["eval_values"], 4).tolist(), "seconds": run["seconds"]}  # fmt: skip
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(saved, f, separators=(",", ":"))
    os.replace(path + ".tmp", path)


def keep_furthest(runs: dict, name: str, run: dict):
    """Add a run to {run name: run}; a name found twice keeps the copy that reached the most env steps."""
    if name not in runs or run["steps"].max() > runs[name]["steps"].max():
        runs[name] = run


def collect(sweep_dir: str, variant: str = "") -> dict:
    """{run name: run} of every run folder with logs, and of every curve file --save-curves wrote, in `sweep_dir`;
    a `variant` is appended to each name (`__<variant>`), so the runs form a curve of their own."""
    runs: dict = {}
    for entry in sorted(os.listdir(sweep_dir)):
        path, name = os.path.join(sweep_dir, entry), entry.removesuffix(".json")
        match = RUN_NAME.match(name)
        if not match or match["env"] not in METRIC:
            continue
        if os.path.isdir(path):
            run = read_run(path, METRIC[match["env"]])
        elif entry.endswith(".json"):
            run = read_curve(path)
        else:
            continue
        if run is not None and len(run["steps"]):
            run["seed"], run["sweep"] = int(match["seed"]), os.path.basename(os.path.normpath(sweep_dir))
            run["name"] = name  # the file name --save-curves writes back, without the variant
            keep_furthest(runs, name + (f"__{variant}" if variant else ""), run)
    return runs


def by_curve(runs: dict) -> dict:
    """{env: {(method, variant): [run, ...]}}: the runs that differ only in the seed form one curve."""
    curves: dict = {}
    for name, run in sorted(runs.items()):
        match = RUN_NAME.match(name)
        curves.setdefault(match["env"], {}).setdefault((match["method"], match["variant"]), []).append(run)
    return curves


def binned(run: dict, edges: np.ndarray) -> np.ndarray:
    """Mean of the training episodes ending in each bin (NaN where none did)."""
    which = np.digitize(run["steps"], edges[1:-1])
    sums = np.bincount(which, weights=run["values"], minlength=len(edges) - 1)
    counts = np.bincount(which, minlength=len(edges) - 1)
    out = np.full(len(edges) - 1, np.nan)
    out[counts > 0] = sums[counts > 0] / counts[counts > 0]
    out[edges[1:] > run["steps"].max() + (edges[1] - edges[0])] = np.nan  # past the run's end
    return out


def label(key) -> str:
    method, variant = key
    return METHODS.get(method, method) + variant.replace("__", ", ")


def order(keys):
    rank = {m: i for i, m in enumerate(METHODS)}
    return sorted(keys, key=lambda k: (rank.get(k[0], len(rank)), k[1]))


def plot_env(env: str, curves: dict, bin_size: int, out: str):
    longest = max(run["steps"].max() for runs in curves.values() for run in runs)
    edges = np.arange(0, longest + bin_size, bin_size)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for key in order(curves):
        runs = curves[key]
        values = np.stack([binned(run, edges) for run in runs])
        centres = (edges[:-1] + edges[1:]) / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins past the runs' ends
            mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
        color = COLORS.get(key[0])
        seeds = f"({len(runs)} seed{'s' * (len(runs) > 1)})"
        ax.plot(centres, mean, color=color, linestyle="--" if key[1] else "-", label=f"{label(key)} {seeds}")
        if len(runs) > 1:
            ax.fill_between(centres, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(Y_LABEL[env])
    ax.set_title(TITLE[env], fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def final_row(env: str, key, runs: list, last_fraction: float) -> str:
    """Final figures: each run's training episodes in its last `last_fraction` of env steps, and its
    last evaluation; mean +- std over seeds."""
    finals, evals, steps, minutes = [], [], [], []
    for run in runs:
        end = run["steps"].max()
        finals.append(run["values"][run["steps"] >= (1 - last_fraction) * end].mean())
        if len(run["eval_values"]):
            evals.append(run["eval_values"][-1])
        steps.append(end)
        if run["seconds"]:
            minutes.append(run["seconds"] / 60)

    def fmt(xs, digits=2):
        if not xs:
            return "-"
        return f"{np.mean(xs):.{digits}f}" + (f" ± {np.std(xs):.{digits}f}" if len(xs) > 1 else "")

    return (f"| {label(key)} | {len(runs)} | {int(min(steps)):,} | {fmt(finals)} | {fmt(evals)} | "
            f"{fmt(minutes, 0) if minutes else '-'} |")  # fmt: skip


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "sweep_dirs",
        nargs="+",
        help="runs/<sweep name> (the folders sweep.py wrote); <folder>=<variant> labels its runs",
    )
    parser.add_argument(
        "--out", default=None, help="path prefix: <out>_<env>.png and <out>.md (default: <first sweep_dir>/fig4)"
    )
    parser.add_argument("--bin", type=int, default=20_000, help="env steps per averaging bin")
    parser.add_argument(
        "--last-fraction", type=float, default=0.1, help="share of each run's env steps in its final figure"
    )
    parser.add_argument(
        "--save-curves", default=None, help="also write each run's curve to <dir>/<sweep>/<run>.json (e.g. docs/curves)"
    )
    args = parser.parse_args(argv)
    fix = (
        "pass runs/<sweep name>, the folder sweep.py writes (run folders named <env>__<method>__s<seed>), or a folder "
        "of curves that --save-curves wrote"
    )
    if args.bin < 1:
        sys.exit(f"error: --bin must be at least 1 env step (got {args.bin})")
    if not 0 < args.last_fraction <= 1:
        sys.exit(f"error: --last-fraction must be in (0, 1] (got {args.last_fraction})")
    runs: dict = {}
    for sweep_arg in args.sweep_dirs:
        sweep_dir, _, variant = (sweep_arg, "", "") if os.path.exists(sweep_arg) else sweep_arg.partition("=")
        if not os.path.exists(sweep_dir):
            sys.exit(f"error: {sweep_dir} does not exist; {fix}")
        if not os.path.isdir(sweep_dir):
            sys.exit(f"error: {sweep_dir} is a file, not a folder; {fix}")
        try:
            found = collect(sweep_dir, variant)
        except Exception as e:  # an unreadable folder, event file or curve file
            sys.exit(f"error: cannot read the runs in {sweep_dir} ({type(e).__name__}); {fix}")
        for name, run in found.items():
            keep_furthest(runs, name, run)
        if not found:
            folder = os.path.normpath(sweep_dir)
            if RUN_NAME.match(os.path.basename(folder)):
                parent = os.path.dirname(folder) or "."
                sys.exit(f"error: {sweep_dir} is one run, not a sweep; pass its parent folder {parent}")
            sys.exit(f"error: no runs with logs in {sweep_dir}; {fix}")
    curves = by_curve(runs)
    out = args.out or os.path.join(args.sweep_dirs[0].partition("=")[0], "fig4")
    folders = ", ".join(f"`{d}`" for d in args.sweep_dirs)
    lines = [f"Final figures of {folders} (`python docs/plot_fig4.py {shlex.join(argv or sys.argv[1:])}`). "
             f"Training: the mean over the training episodes of each run's last {args.last_fraction:.0%} of env steps; "
             "evaluation: the run's last evaluation (policy mean); minutes: the RL phase (tensorboard clock, pauses "
             "over 10 min left out); mean ± std over seeds.", ""]  # fmt: skip
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        for env in curves:
            png = f"{out}_{env}.png"
            plot_env(env, curves[env], args.bin, png)
            print(f"wrote {png}")
            lines += [f"### {TITLE[env]} ({Y_LABEL[env]})", "",
                      "| method | seeds | env steps | training, final | evaluation, last | minutes per run |",
                      "|---|---|---|---|---|---|"]  # fmt: skip
            lines += [final_row(env, key, curves[env][key], args.last_fraction) for key in order(curves[env])] + [""]
        with open(f"{out}.md", "w") as f:
            f.write("\n".join(lines))
    except OSError as e:
        sys.exit(f"error: cannot write {e.filename or out} ({e.strerror}); pass another --out")
    print(f"wrote {out}.md")
    if args.save_curves:
        try:
            for name, run in runs.items():
                save_curve(run, os.path.join(args.save_curves, run["sweep"], f"{run['name']}.json"))
        except OSError as e:
            sys.exit(f"error: cannot write {e.filename or args.save_curves} ({e.strerror}); pass another --save-curves")
        print(f"wrote {len(runs)} curves to {args.save_curves}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
