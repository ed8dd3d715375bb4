"""Benchmark of the scripted kitchen demonstrations (their quality figures; not a timed test).

    python bench/bench_kitchen_demos.py                  # 100 attempts per subtask, 96 episodes
    python bench/bench_kitchen_demos.py --attempts 0 --episodes 240 --action-noise 0.02   # 2 min

Measures, for each of the seven scripted subtask controllers, the success rate over `--attempts` tries
from the states where the collector uses it (the n-th subtask of a collected episode starts where the
previous one ended), and for whole collected episodes (orders as the collector draws them) the fraction
that complete all four subtasks, the share of each relay sequence that does, their length, the
generation rate and how strongly the data leans towards the downstream chain (`chain_statistics`).
Writes bench/results/kitchen_demos.json; the one there is of --attempts 30 (1.7 min): each subtask 0.90-1.0,
all four in 0.96 of the 96 episodes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs.kitchen import ALL_SUBTASKS, KitchenEnv  # noqa: E402
from envs.kitchen_demos import Args as CollectArgs  # noqa: E402
from envs.kitchen_demos import chain_statistics, collect_episode, completion_order, episode_orders  # noqa: E402
from envs.kitchen_scripted import SubtaskController  # noqa: E402


@dataclass
class Args:
    attempts: int = 100
    """tries per subtask (each inside a collector-style episode, at its drawn position); 0 skips them"""
    episodes: int = 96
    """collector episodes for the all-four rate, chain statistics, lengths and generation rate"""
    orders: Literal["relay", "uniform"] = "relay"
    """the collector's --orders"""
    action_noise: float = CollectArgs.action_noise
    """the collector's --action-noise"""
    max_episode_steps: int = CollectArgs.max_episode_steps
    """the collector's --max-episode-steps"""
    seed: int = 12345
    """seed (different from the dataset's default 0)"""
    out: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "kitchen_demos.json")
    """where to write the figures"""


def subtask_success(args: Args) -> dict:
    """Per subtask: success over `attempts` tries, each at a random position in an order of the collector's."""
    env = KitchenEnv()
    orders = sorted(set(episode_orders(CollectArgs(episodes=1000, orders=args.orders, seed=args.seed))))
    results = defaultdict(list)
    rng = np.random.default_rng(args.seed)
    for task in ALL_SUBTASKS:
        candidates = [o for o in orders if task in o]
        for attempt in range(args.attempts):
            order = candidates[rng.integers(len(candidates))]
            env.set_tasks(order)
            env.reset(seed=int(rng.integers(2**31)))
            for earlier in order[: order.index(task)]:  # reach the state the collector would start from
                run(env, SubtaskController(env, earlier, rng, action_noise=args.action_noise))
            ctrl = SubtaskController(env, task, rng, action_noise=args.action_noise)
            run(env, ctrl)
            results[task].append(ctrl.complete)
    return {task: float(np.mean(v)) for task, v in results.items()}


def run(env, ctrl, limit: int = 200):
    for _ in range(limit):
        if ctrl.done:
            return
        env.step(ctrl.act())


def episodes(args: Args) -> dict:
    collect_args = CollectArgs(
        episodes=args.episodes,
        orders=args.orders,
        seed=args.seed,
        action_noise=args.action_noise,
        max_episode_steps=args.max_episode_steps,
    )
    env, orders = KitchenEnv(max_episode_steps=args.max_episode_steps), episode_orders(collect_args)
    start, eps = time.time(), []
    for i in range(args.episodes):
        eps.append(collect_episode(env, orders[i], np.random.default_rng([args.seed, i]), args.seed + i, collect_args))
    seconds = time.time() - start
    lengths = np.array([len(e["actions"]) for e in eps])
    per_sequence = defaultdict(list)
    for e in eps:
        per_sequence[", ".join(e["order"])].append(e["completed"] == 4)
    return {
        "episodes": args.episodes,
        "all_four_completed": float(np.mean([e["completed"] == 4 for e in eps])),
        "mean_subtasks_completed": float(np.mean([e["completed"] for e in eps])),
        "mean_length": float(lengths.mean()),
        "max_length": int(lengths.max()),
        "truncated": float(np.mean(lengths >= collect_args.max_episode_steps)),
        "env_steps_per_s": float(lengths.sum() / seconds),
        "episodes_per_s": args.episodes / seconds,
        "chain": chain_statistics([completion_order(e["states"]) for e in eps]),
        "all_four_per_order": {k: float(np.mean(v)) for k, v in sorted(per_sequence.items()) if args.orders == "relay"},
    }


def main():
    import tyro

    args = tyro.cli(Args)
    figures = {
        "orders": args.orders,
        "action_noise": args.action_noise,
        "max_episode_steps": args.max_episode_steps,
        "attempts": args.attempts,
    }
    if args.attempts:
        figures["subtask_success"] = subtask_success(args)
    figures["collector"] = episodes(args)
    print(json.dumps(figures, indent=2))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
