"""Where a maze agent went while it learned (the paper's Fig. 13 panels): the training rollouts of spirl_sac.py runs,
drawn from their replay buffers, the darker the later.

    python docs/plot_maze_training.py runs/maze_goal_a/checkpoint.pt runs/maze_goal_b/checkpoint.pt --out docs/fig13.png

One panel per run: every high-level transition of its replay buffer (the state where a skill started to the one
where it ended, H env steps later) as a line segment over the downstream maze, coloured from light to dark in the
order they were collected, with the run's start and goal (spirl_sac.py --goal) marked. The replay holds the whole run
while it is smaller than --buffer-size (1M high-level transitions: 10M env steps at H = 10).

It also prints how close each run's training episodes came to the goal, per --window episodes: the quartiles of each
episode's closest grid distance to the goal (cells, at the skills' ends), how many came within the reward's 2 cells,
and the quartiles of each episode's farthest grid distance from the start (how far it went, whichever way). Beside
`python bench/bench_maze.py --skills-only` (the prior's own skills from the start) it shows whether the policy
explores as its prior did.

With --critic it also prints what the run's critics think of the places it went: min(Q_1, Q_2)(s, z) of the replay's
transitions (their state and the skill taken), by the state's grid distance to the goal. In a reward-free stretch of
the maze exact critics would hold about -alpha * delta * gamma / (1 - gamma) (the KL still to pay); values far above
that, far from any reward, are extrapolated, and the policy's gradient follows them.
"""

from __future__ import annotations

import argparse
import os
import sys

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import SpirlError  # noqa: E402
from envs.maze import DOWNSTREAM_GOAL, MazeEnv, distances_from, xy_to_cell  # noqa: E402

FIX = "pass runs/<run>/checkpoint.pt of a spirl_sac.py --env maze run"


def read_checkpoint(path: str) -> dict:
    """A spirl_sac.py maze checkpoint, memory-mapped (the replay's frames stay on disk), or a one-line SpirlError."""
    inside = os.path.join(path, "checkpoint.pt")
    if os.path.isdir(path):
        raise SpirlError(
            f"{path} is a folder, not a checkpoint; " + (f"pass {inside}" if os.path.isfile(inside) else FIX)
        )
    if not os.path.isfile(path):
        raise SpirlError(f"{path} does not exist; {FIX}")
    try:  # mmap: the replay's frames stay on disk, only the states are read
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise SpirlError(f"cannot read {path} ({type(e).__name__}); {FIX}") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "spirl_sac" or ckpt.get("args", {}).get("env") != "maze":
        raise SpirlError(f"{path} is not a spirl_sac.py checkpoint of a maze run; {FIX}")
    return ckpt


def training_paths(path: str) -> tuple[np.ndarray, tuple[int, int], int]:
    """(segments (N, 2, 2) of (x, y) in collection order, the run's goal cell, its env steps) from a checkpoint."""
    ckpt = read_checkpoint(path)
    replay, size = ckpt["replay"], ckpt["replay"]["size"]
    start = replay["next"] if size == len(replay["states"]) and replay["next"] < size else 0
    order = np.roll(np.arange(size), -start)  # a full, wrapped buffer: oldest first
    states, next_states = replay["states"][order, :2].numpy(), replay["next_states"][order, :2].numpy()
    goal = ckpt["args"].get("goal") or DOWNSTREAM_GOAL
    return np.stack([states, next_states], axis=1), tuple(goal), int(ckpt["env_steps"])


BANDS = (0, 3, 8, 15, 22, 27, 32, 40, 60)  # grid distance to the goal (cells), the bands' lower edges


def critic_by_distance(path: str, every: int = 3) -> list[tuple[int, int, int, int, list[float]]]:
    """Per band of BANDS: (from, to, transitions, rewarded transitions, [10%, 50%, 90%] quantiles of min(Q_1, Q_2)
    at (s, z)) over every `every`-th transition of the checkpoint's replay; bands without transitions are left out."""
    from spirl_sac import TwinCritic  # the network as spirl_sac.py builds it

    ckpt = read_checkpoint(path)
    args, config, replay = ckpt["args"], ckpt["skill_config"], ckpt["replay"]
    critic = TwinCritic(config["state_dim"], config["latent_dim"], args["critic_hidden"], args["critic_layers"])
    critic.load_state_dict(ckpt["learner"]["critic"])
    idx = torch.arange(0, replay["size"], max(every, 1))
    states = replay["states"][idx]
    with torch.no_grad():
        q = critic(states, replay["skills"][idx]).min(0).values.numpy()
    rewarded = replay["rewards"][idx].numpy() > 0
    goal = tuple(args.get("goal") or DOWNSTREAM_GOAL)
    env = MazeEnv.downstream(goal=goal)
    to_goal = distances_from(env.walls, goal)
    env.close()
    distance = np.array([to_goal[xy_to_cell(env.walls, xy)] for xy in states[:, :2].numpy()])
    rows = []
    for lo, hi in zip(BANDS, BANDS[1:] + (10_000,)):
        inside = (distance >= lo) & (distance < hi)
        if inside.any():
            quantiles = [float(v) for v in np.percentile(q[inside], [10, 50, 90])]
            rows.append((lo, hi, int(inside.sum()), int(rewarded[inside].sum()), quantiles))
    return rows


def closest_by_window(segments: np.ndarray, goal, window: int) -> list[tuple[int, int, list[float], int, list[float]]]:
    """Per `window` training episodes: (first episode, episodes, quartiles of each episode's closest grid distance to
    the goal, episodes within 2 cells, quartiles of each episode's farthest grid distance from the start), at the
    skills' ends. An episode starts where a skill does not begin where the last one ended (the reset: maze episodes
    never terminate, each ends at its time limit)."""
    env = MazeEnv.downstream(goal=goal)
    to_goal, from_start = distances_from(env.walls, goal), distances_from(env.walls, env.start)
    env.close()
    cells = [xy_to_cell(env.walls, xy) for xy in segments[:, 1]]
    ends = np.array([to_goal[c] for c in cells], dtype=float)
    ends[ends < 0] = np.inf  # outside the free cells (cannot happen, walls stop the agent): never the closest
    away = np.array([from_start[c] for c in cells], dtype=float)
    firsts = np.flatnonzero(np.r_[True, np.any(segments[1:, 0] != segments[:-1, 1], axis=1)])
    closest, farthest = np.minimum.reduceat(ends, firsts), np.maximum.reduceat(away, firsts)
    rows = []
    for first in range(0, len(closest), window):
        part, out = closest[first : first + window], farthest[first : first + window]
        quartiles = [[float(q) for q in np.percentile(x, [25, 50, 75])] for x in (part, out)]
        rows.append((first, len(part), quartiles[0], int(np.sum(part <= 2)), quartiles[1]))
    return rows


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint.pt of spirl_sac.py --env maze runs, one panel each")
    parser.add_argument("--out", default="docs/fig13_maze_goals.png")
    parser.add_argument("--window", type=int, default=50, help="training episodes per row of the printed table")
    parser.add_argument("--critic", action="store_true", help="also print the critics' Q by distance to the goal")
    args = parser.parse_args(argv)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        runs = [training_paths(path) for path in args.checkpoints]
    except SpirlError as e:  # a missing, unreadable or wrong checkpoint: one line, no traceback
        sys.exit(f"error: {e}")
    except OSError as e:
        sys.exit(f"error: cannot create the folder of {args.out} ({e.strerror}); pass another --out")
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4.4), squeeze=False)
    for ax, (segments, goal, env_steps) in zip(axes[0], runs):
        env = MazeEnv.downstream(goal=goal)
        rows, cols = env.walls.shape
        ax.imshow(env.walls, cmap="Greys", extent=(-cols / 2, cols / 2, -rows / 2, rows / 2), vmin=0, vmax=1.6)
        shade = np.linspace(0.15, 1.0, len(segments))  # light (early) to dark (late)
        ax.add_collection(LineCollection(segments, colors=plt.cm.Blues(shade), linewidths=0.4, rasterized=True))
        ax.plot(*env.reset(seed=0)[0][:2], "o", color="tab:green", ms=7, label="start")
        ax.plot(*env.goal, "*", color="tab:red", ms=12, label="goal")
        ax.set_title(f"goal cell {goal}\n({env_steps:,} env steps, darker = later)", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        env.close()
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    try:
        fig.savefig(args.out, dpi=110, bbox_inches="tight")
    except OSError as e:
        sys.exit(f"error: cannot write {args.out} ({e.strerror}); pass another --out")
    print(f"written: {args.out}")
    for path, (segments, goal, _) in zip(args.checkpoints, runs):
        print(f"{path}: per training episode, quartiles of the closest grid distance to the goal {goal} (episodes")
        print("  within 2 cells) and of the farthest from the start")
        for first, n, closest, near, farthest in closest_by_window(segments, goal, max(args.window, 1)):
            print(f"  episodes {first}-{first + n - 1}: closest {closest} ({near}), farthest from the start {farthest}")
        if args.critic:
            print("  the critics' min(Q_1, Q_2)(s, z) over the replay (every 3rd transition), by the grid distance")
            print("  of s to the goal: 10% / 50% / 90% quantiles (transitions, rewarded ones)")
            for lo, hi, n, rewarded, (q10, q50, q90) in critic_by_distance(path):
                band = f"{lo}-{hi}" if hi < 10_000 else f"{lo}+"
                print(f"  {band:>6} cells: {q10:8.1f} {q50:8.1f} {q90:8.1f}  ({n}, {rewarded} rewarded)")


if __name__ == "__main__":
    main()
