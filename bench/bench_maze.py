"""Facts about the maze task: how far the goal is, how far random actions get, env speed.

    python bench/bench_maze.py            # writes bench/results/maze.json

- the downstream start-goal distance along the shortest path (cells);
- uniform random actions in the downstream maze: the largest straight-line distance from the start
  within an episode, and the steps spent within the goal threshold, over `--episodes` episodes;
- env steps/s of a training env (new layout every 500 steps) and of the image env.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs.maze import DOWNSTREAM_GOAL, DOWNSTREAM_START, MazeEnv, downstream_layout, shortest_path  # noqa: E402


@dataclass
class Args:
    episodes: int = 10
    """random-action episodes in the downstream maze (2000 steps each)"""
    out: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "maze.json")
    """where to write the figures"""


def steps_per_second(env: MazeEnv, steps: int = 5000) -> float:
    env.reset(seed=0)
    rng, start = np.random.default_rng(0), time.time()
    for t in range(steps):
        _, _, _, truncated, _ = env.step(rng.uniform(-1, 1, 2))
        if truncated:
            env.reset()
    return steps / (time.time() - start)


def main():
    import tyro

    args = tyro.cli(Args)
    env = MazeEnv.downstream()
    farthest, at_goal = [], 0
    for seed in range(args.episodes):
        state, _ = env.reset(seed=seed)
        rng, start, far = np.random.default_rng(seed), state[:2].copy(), 0.0
        for _ in range(env.max_episode_steps):
            state, reward, *_ = env.step(rng.uniform(-1, 1, 2))
            far, at_goal = max(far, float(np.linalg.norm(state[:2] - start))), at_goal + int(reward > 0)
        farthest.append(far)
    figures = {
        "shortest_path_cells": len(shortest_path(downstream_layout(), DOWNSTREAM_START, DOWNSTREAM_GOAL)) - 1,
        "random_actions_farthest_cells": [round(f, 1) for f in farthest],
        "random_actions_steps_at_goal": at_goal,
        "train_env_steps_per_s": steps_per_second(MazeEnv()),
        "image_env_steps_per_s": steps_per_second(MazeEnv.downstream(image=True)),
    }
    print(json.dumps(figures, indent=2))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
