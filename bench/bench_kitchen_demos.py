"""Benchmark of the scripted kitchen demonstrations (issue 3's quality bars; not a timed test).

    python bench/bench_kitchen_demos.py                  # 100 attempts per subtask, 100 episodes
    python bench/bench_kitchen_demos.py --attempts 20 --episodes 20

Measures, for each of the seven scripted subtask controllers, the success rate over `--attempts` tries
from the states where the collector uses it (the n-th subtask of a collected episode starts where the
previous one ended), and for whole collected episodes the fraction that complete all four subtasks,
their length and the generation rate. Writes bench/results/kitchen_demos.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs.kitchen import ALL_SUBTASKS, KitchenEnv  # noqa: E402
from envs.kitchen_demos import Args as CollectArgs, collect_episode, task_orders  # noqa: E402
from envs.kitchen_scripted import SubtaskController  # noqa: E402


@dataclass
class Args:
    attempts: int = 100
    """tries per subtask (each inside a collector-style episode, at its drawn position)"""
    episodes: int = 100
    """collector episodes for the all-four rate, lengths and generation rate"""
    seed: int = 12345
    """seed (different from the dataset's default 0)"""
    out: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "kitchen_demos.json")
    """where to write the figures"""


def subtask_success(args: Args) -> dict:
    """Per subtask: success over `attempts` tries, each at a random position in a random valid order."""
    env, orders = KitchenEnv(), task_orders()
    results = defaultdict(list)
    rng = np.random.default_rng(args.seed)
    for task in ALL_SUBTASKS:
        candidates = [o for o in orders if task in o]
        for attempt in range(args.attempts):
            order = candidates[rng.integers(len(candidates))]
            env.set_tasks(order)
            env.reset(seed=int(rng.integers(2**31)))
            for earlier in order[: order.index(task)]:  # reach the state the collector would start from
                run(env, SubtaskController(env, earlier, rng))
            ctrl = SubtaskController(env, task, rng)
            run(env, ctrl)
            results[task].append(ctrl.complete)
    return {task: float(np.mean(v)) for task, v in results.items()}


def run(env, ctrl, limit: int = 200):
    for _ in range(limit):
        if ctrl.done:
            return
        env.step(ctrl.act())


def episodes(args: Args) -> dict:
    env, orders, collect_args = KitchenEnv(), task_orders(), CollectArgs()
    start, eps = time.time(), []
    for i in range(args.episodes):
        rng = np.random.default_rng([args.seed, i])
        eps.append(collect_episode(env, orders[rng.integers(len(orders))], rng, args.seed + i, collect_args))
    seconds = time.time() - start
    lengths = np.array([len(e["actions"]) for e in eps])
    return {
        "episodes": args.episodes,
        "all_four_completed": float(np.mean([e["completed"] == 4 for e in eps])),
        "mean_subtasks_completed": float(np.mean([e["completed"] for e in eps])),
        "mean_length": float(lengths.mean()),
        "max_length": int(lengths.max()),
        "env_steps_per_s": float(lengths.sum() / seconds),
        "episodes_per_s": args.episodes / seconds,
    }


def main():
    import tyro

    args = tyro.cli(Args)
    figures = {"subtask_success": subtask_success(args), "collector": episodes(args), "attempts": args.attempts}
    print(json.dumps(figures, indent=2))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
