"""Benchmark: block-stacking env speed, the scripted policy's success rate, and the data generation rate.

    python bench/bench_block_stacking.py          # prints a table and writes bench/results/block_stacking.json

- raw env steps/s: uniform random actions in the 11-block task and the 5-block training scene, with
  and without image observations (one process).
- the scripted policy: 100 episodes from the collector's start states (seeds 0-99 of the collector's
  own index scheme, --seed 12345), each carrying 2 table blocks onto the scene's tower (the collector's
  default): the share it completes, the share of single stacking steps (pick, carry, place) that
  succeed, and the tower levels the placed blocks landed at, with its env steps/s.
- generation: `python -m envs.block_stacking_demos --episodes 500` on every core, episodes and env
  steps per second as the collector reports them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs.block_stacking import BlockStackingEnv  # noqa: E402
from envs.block_stacking_demos import Args, collect, scripted_episode, tower  # noqa: E402


def raw_steps_per_s(env: BlockStackingEnv, steps: int = 2000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    actions = rng.uniform(env.action_space.low, env.action_space.high, (steps, 3))
    env.reset(seed=seed)
    start = time.perf_counter()
    for t, action in enumerate(actions):
        env.step(action)
        if (t + 1) % env.max_episode_steps == 0:
            env.reset()
    return steps / (time.perf_counter() - start)


def scripted_success(episodes: int = 100, seed: int = 12345) -> dict:
    env = BlockStackingEnv.training()
    completed, planned_steps, done_steps, steps, start = 0, 0, 0, 0, time.perf_counter()
    levels = np.zeros(5, int)  # placed blocks by the tower level they landed at (base: 0)
    for i in range(episodes):
        rng = np.random.default_rng([seed, i])
        rng.random()  # the collector's first draw (random-action or scripted episode)
        env_seed = seed * 1_000_003 + i
        env.reset(seed=env_seed)
        height = len(tower(env.block_yz()))
        episode = scripted_episode(env, rng, env_seed, stacks=Args.stacks)
        levels[height : height + episode["stacks"]] += 1
        completed += episode["terminated"]
        done_steps += episode["stacks"]
        planned_steps += episode["stacks"] + (not episode["terminated"])  # a failed episode failed one step
        steps += len(episode["actions"])
    return {
        "episodes": episodes,
        "completed": completed / episodes,
        "stacking_steps_succeeded": done_steps / planned_steps,
        "placement_levels_1_to_4": (levels[1:] / levels.sum()).round(3).tolist(),
        "env_steps_per_s": steps / (time.perf_counter() - start),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "block_stacking.json")
    parser.add_argument("--out", default=out)
    parser.add_argument("--generate", type=int, default=500, help="episodes for the generation-rate run")
    args = parser.parse_args()
    results = {
        "command": "python bench/bench_block_stacking.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_start": os.getloadavg()[0],
        "raw_env_steps_per_s": {},
    }
    for name, make in (
        ("11-block task", BlockStackingEnv.downstream),
        ("5-block training scene", BlockStackingEnv.training),
    ):
        for image in (False, True):
            rate = raw_steps_per_s(make(image=image))
            key = f"{name}{', images' if image else ''}"
            results["raw_env_steps_per_s"][key] = rate
            print(f"raw env, random actions, {key}: {rate:7.0f} env steps/s", flush=True)
    results["scripted_policy"] = scripted = scripted_success()
    print(
        f"scripted policy, {scripted['episodes']} episodes of 1-3 stacking steps: {scripted['completed']:.0%} "
        f"completed, {scripted['stacking_steps_succeeded']:.1%} of stacking steps succeeded "
        f"({scripted['env_steps_per_s']:.0f} env steps/s)",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as folder:
        summary = collect(Args(episodes=args.generate, out=os.path.join(folder, "data"), seed=1))
    results["generation"] = summary
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
