"""Benchmark: raw kitchen env steps/s next to spirl_sac.py's env steps/s, and ms per gradient step.

    python bench/bench_sac.py            # prints a table and writes bench/results/sac.json

- raw: FrankaKitchen-v1 as gymnasium-robotics ships it (its class, no gym.make wrappers), random
  actions, measured before and after the spirl_sac.py runs (the mean of the two is the reference).
- spirl_sac.py: env steps/s of its training loop while it learns (one gradient step per high-level
  transition, evaluations excluded), with the kitchen's sizes (prior 6 x 128, critics 6 x 256,
  batch 256). The skill model is freshly initialised (speed does not depend on its training) and the
  warm-up is shortened to 200 transitions so that the timed part is the learning phase. Variants: the
  default (Algorithm 1's strict order, float32), --overlap-updates, and --overlap-updates --critic-bf16.
- gradient step: median ms of one `sac_update` (Alg. 1 lines 9-13) at those sizes, on 1 thread (what
  the overlapped loop uses on 2 cores) and on all cores, float32 and bf16 critics.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import spirl_pretrain as sp  # noqa: E402
import spirl_sac as sac  # noqa: E402
from envs.kitchen import _FrankaKitchenV1  # noqa: E402
from envs.runs import save_checkpoint  # noqa: E402


def raw_env_steps_per_s(steps: int, seed: int = 0) -> float:
    env = _FrankaKitchenV1()
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps, 9))
    env.reset(seed=seed)
    start = time.perf_counter()
    for t, action in enumerate(actions):
        env.step(action)
        if (t + 1) % 280 == 0:  # the kitchen's episode length
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def kitchen_skill_checkpoint(folder: str) -> str:
    torch.manual_seed(0)
    config = {
        "env": "kitchen",
        "state_dim": 30,
        "action_dim": 9,
        "skill_horizon": 10,
        "latent_dim": 10,
        "hidden_dim": 128,
        "prior_layers": 6,
        "dataset": "none (benchmark)",
        "seed": 0,
        "val_fraction": 0.0,
        "beta": 5e-4,
        "num_steps": 0,
        "lr": 1e-3,
        "batch_size": 128,
        "image": False,
        "state_features": None,
    }
    model = sp.SkillModel(**config)
    path = os.path.join(folder, "skills.pt")
    save_checkpoint(path, {"config": config, "model": model.state_dict()}, kind="spirl_pretrain")
    return path


def spirl_sac_steps_per_s(skills: str, folder: str, steps: int, **flags) -> float:
    threads = torch.get_num_threads()
    args = sac.Args(
        prior_checkpoint=skills,
        total_env_steps=steps,
        warmup_transitions=200,
        eval_every=10**9,
        eval_episodes=1,
        checkpoint_every=10**9,
        run_name=os.path.join(folder, "run"),
        **flags,
    )
    result = sac.train(args)
    torch.set_num_threads(threads)  # train() sets the learner's thread count
    return result["learning_sps"]


def update_ms(threads: int, bf16: bool, repeats: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = sp.SkillModel(state_dim=30, action_dim=9, skill_horizon=10, latent_dim=10, hidden_dim=128, prior_layers=6)
    args = sac.Args(critic_layers=6, delta=5.0)
    learner = sac.build_learner(args, model.eval().requires_grad_(False), {"latent_dim": 10, "state_dim": 30})
    if bf16:
        sac.use_bf16(learner.critic)
        sac.use_bf16(learner.critic_target)
    buffer = sac.ReplayBuffer(10_000, 30, 10)
    g = torch.Generator().manual_seed(0)
    for _ in range(10_000):
        buffer.add(
            np.random.randn(30), torch.randn(10), 0.0, np.random.randn(30), False, torch.randn(20), torch.randn(20)
        )

    def step():
        sac.sac_update(learner, buffer.sample(256, g), g)

    for _ in range(10):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(20):
            step()
        times.append((time.perf_counter() - start) / 20 * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-steps", type=int, default=20_000, help="env steps per spirl_sac.py run")
    parser.add_argument("--raw-steps", type=int, default=5_000, help="env steps per raw measurement")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per gradient-step figure")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "sac.json"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    results = {
        "command": "python bench/bench_sac.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {cores} cores, torch {torch.__version__}",
    }
    raw = [raw_env_steps_per_s(args.raw_steps)]
    with tempfile.TemporaryDirectory() as folder:
        skills = kitchen_skill_checkpoint(folder)
        variants = {
            "default (strict order, float32)": {},
            "--overlap-updates": {"overlap_updates": True},
            "--overlap-updates --critic-bf16": {"overlap_updates": True, "critic_bf16": True},
        }
        sps = {name: spirl_sac_steps_per_s(skills, folder, args.env_steps, **flags) for name, flags in variants.items()}
    raw.append(raw_env_steps_per_s(args.raw_steps))
    raw_rate = float(np.mean(raw))
    results["raw_FrankaKitchen-v1_steps_per_s"] = raw
    results["spirl_sac_steps_per_s"] = sps
    results["spirl_sac_fraction_of_raw"] = {name: rate / raw_rate for name, rate in sps.items()}
    results["update_ms"] = {
        f"{threads} thread{'s' if threads > 1 else ''}, {'bf16' if bf16 else 'float32'}": update_ms(
            threads, bf16, args.repeats
        )
        for threads in sorted({1, cores})
        for bf16 in (False, True)
    }
    print(f"\nraw FrankaKitchen-v1: {raw_rate:.0f} env steps/s (before {raw[0]:.0f}, after {raw[1]:.0f})")
    for name, rate in sps.items():
        print(f"spirl_sac.py {name}: {rate:.0f} env steps/s = {rate / raw_rate:.0%} of raw")
    for name, ms in results["update_ms"].items():
        print(f"gradient step ({name}): {ms:.1f} ms")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
