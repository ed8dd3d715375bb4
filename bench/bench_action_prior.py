"""What does the flat prior's action prior do on its own in the kitchen? Rollouts of p(a | s), per subtask.

    python bench/bench_action_prior.py runs/kitchen_fig4/kitchen__flat_prior__s1/checkpoint.pt --episodes 10

Reads a kitchen checkpoint of baselines/flat_prior.py, whose frozen action prior p(a | s) is the data's single-step
behaviour-cloning model (the same fit as baselines/bc_sac.py's pi_BC, and the flat prior's policy at its first env
step). Runs it for whole episodes, with its mean action and with actions sampled from it, in the ordered downstream
task and in one-subtask tasks, one per kitchen subtask, and writes the subtasks completed per episode to
bench/results/action_prior_kitchen.json. It is the flat counterpart of bench/bench_skills.py's prior rollouts: a flat
policy that starts as this prior and stays near it (KL <= delta) explores where these rollouts go. A few minutes of CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "baselines"))

from envs import SpirlError, make_env  # noqa: E402
from envs.kitchen import ALL_SUBTASKS  # noqa: E402
from envs.runs import read_checkpoint  # noqa: E402


def load_action_prior(path: str):
    import flat_prior

    ckpt = read_checkpoint(path, "flat_prior", "baselines/flat_prior.py")
    saved = {k: v for k, v in ckpt["args"].items() if k in flat_prior.Args.__dataclass_fields__}
    args = flat_prior.resolve_args(flat_prior.Args(**saved))
    if args.env != "kitchen":
        raise SpirlError(f"{path} is a run on --env {args.env}; pass a kitchen run of baselines/flat_prior.py")
    prior = flat_prior.make_policy(args)
    prior.load_state_dict(ckpt["learner"]["action_prior"])
    return prior.eval().requires_grad_(False), flat_prior.choose_action


def rollouts(prior, choose_action, tasks, episodes: int, deterministic: bool, seed: int) -> list[float]:
    """Subtasks completed in each of `episodes` episodes of the prior (env seeds seed, seed + 1, ...)."""
    env = make_env("kitchen", **({"tasks": tasks} if tasks else {}))
    generator, completed = torch.Generator().manual_seed(seed), []
    for episode in range(episodes):
        state, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            with torch.no_grad():
                action = choose_action(prior, state, generator, deterministic=deterministic)
            state, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        completed.append(float(info.get("subtasks_completed", 0)))
    env.close()
    return completed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="runs/<run>/checkpoint.pt of a kitchen run of baselines/flat_prior.py")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task and per way of acting")
    parser.add_argument("--tasks", nargs="*", default=list(ALL_SUBTASKS), help="the one-subtask tasks to run")
    parser.add_argument("--seed", type=int, default=0, help="first env seed, and the seed of the sampled actions")
    parser.add_argument("--out", default="bench/results/action_prior_kitchen.json", help="where the figures go")
    args = parser.parse_args(argv)
    try:
        if args.episodes < 1:
            raise SpirlError(f"--episodes must be at least 1 (got {args.episodes})")
        unknown = [t for t in args.tasks if t not in ALL_SUBTASKS]
        if unknown:
            raise SpirlError(f"unknown kitchen subtask {unknown[0]!r}; choose from {list(ALL_SUBTASKS)}")
        prior, choose_action = load_action_prior(args.checkpoint)
    except SpirlError as e:
        sys.exit(f"error: {e}")
    torch.set_num_threads(1)
    figures = {"checkpoint": args.checkpoint, "episodes": args.episodes, "seed": args.seed}
    for name, tasks in [("ordered task", None)] + [(task, (task,)) for task in args.tasks]:
        for way, deterministic in (("mean action", True), ("sampled actions", False)):
            done = rollouts(prior, choose_action, tasks, args.episodes, deterministic, args.seed)
            figures[f"{name}, {way}"] = float(np.mean(done))
            print(f"{name:16s} {way:16s} subtasks completed per episode: {np.mean(done):.2f}", flush=True)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=1)
    except OSError as e:
        sys.exit(f"error: cannot write {args.out} ({e.strerror}); pass another --out")
    print(f"wrote {args.out}")
    return figures


if __name__ == "__main__":
    main()
