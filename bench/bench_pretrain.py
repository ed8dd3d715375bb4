"""Benchmark: raw kitchen env steps/s and skill-prior pretraining samples/s, measured in one run.

    python bench/bench_pretrain.py                 # prints a table and writes bench/results/pretrain.json

- env: FrankaKitchen-v1 as gymnasium-robotics ships it (its class, no gym.make wrappers) vs. this
  project's envs.kitchen.KitchenEnv (30-dim state, ordered reward), random actions, one process.
- pretraining: one gradient step of eq. 4 at batch 128 (the kitchen model: H=10, |Z|=10, 128 units,
  6-layer prior, foreach RAdam), with the model's plain `forward` (embedding then LSTM; step-by-step
  decoder loop) and with its `forward_fused` (one torch.lstm call each, spirl_pretrain.py --fused-lstm).
  The two are timed in alternation (plain, fused, plain, fused, ...), so that the load of a shared
  machine falls on both alike.
- where the time goes: MuJoCo's own mj_step (40 substeps = one env step), one 128x128 @ 128x512 matmul
  (the LSTMs' recurrent product at batch 128), and forward+backward of the two fused LSTMs (encoder and
  decoder) next to a whole training step. Each figure is the median of several timed repeats, since these
  small-kernel timings vary by 10-20% from one repeat to the next on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import mujoco
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import spirl_pretrain as sp  # noqa: E402
from envs.kitchen import KitchenEnv, _FrankaKitchenV1  # noqa: E402


def env_steps_per_s(env, steps: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (steps, 9))
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        out = env.step(action)
        if out[2] or out[3]:
            env.reset()
    return steps / (time.perf_counter() - start)


def median_ms(fn, calls: int, repeats: int) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


def time_breakdown(raw_env, batch_size: int, repeats: int) -> dict:
    model, data = raw_env.robot_env.model, raw_env.robot_env.data
    mj_step_ms = median_ms(lambda: mujoco.mj_step(model, data, nstep=raw_env.robot_env.frame_skip), 200, repeats)
    a, w = torch.randn(batch_size, 128), torch.randn(128, 512)
    matmul_ms = median_ms(lambda: a @ w, 2000, repeats)
    skills = kitchen_model(fused=True)
    actions, z = torch.rand(batch_size, 10, 9) * 2 - 1, torch.randn(batch_size, 10)

    def lstms():
        (skills.encoder(actions)[0].sum() + skills.decoder(z).sum()).backward()

    return {
        "mj_step_ms_per_env_step": mj_step_ms,
        "matmul_128x128x512_ms": matmul_ms,
        "lstms_fwd_bwd_ms_per_train_step": median_ms(lstms, 50, repeats),
    }


def kitchen_model(fused: bool) -> sp.SkillModel:
    torch.manual_seed(0)
    model = sp.SkillModel(state_dim=30, action_dim=9, skill_horizon=10, latent_dim=10, hidden_dim=128, prior_layers=6)
    if fused:  # as spirl_pretrain.train does with --fused-lstm
        model.encoder.forward, model.decoder.forward = model.encoder.forward_fused, model.decoder.forward_fused
    return model


def training_step(fused: bool, batch_size: int):
    """One gradient step of eq. 4, as spirl_pretrain.train runs it, with the plain or the fused forward."""
    model = kitchen_model(fused)
    optimizer = torch.optim.RAdam(model.parameters(), lr=1e-3, foreach=True)
    states = torch.randn(batch_size, 11, 30)
    actions = torch.rand(batch_size, 10, 9) * 2 - 1

    def step():
        losses = sp.skill_prior_loss(model, states, actions, beta=5e-4)
        optimizer.zero_grad(set_to_none=True)
        losses[3].backward()
        optimizer.step()

    return step


def pretrain_samples_per_s(batch_size: int, steps: int, repeats: int) -> dict[str, list[float]]:
    """Samples/s of the plain and the fused training step, `repeats` timings each, taken in alternation."""
    steps_of = {"plain": training_step(False, batch_size), "fused": training_step(True, batch_size)}
    for step in steps_of.values():
        for _ in range(20):
            step()
    rates = {name: [] for name in steps_of}
    for _ in range(repeats):
        for name, step in steps_of.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            rates[name].append(steps * batch_size / (time.perf_counter() - start))
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-steps", type=int, default=3000)
    parser.add_argument("--train-steps", type=int, default=100, help="gradient steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pretrain.json"))
    args = parser.parse_args()

    raw = _FrankaKitchenV1(tasks_to_complete=["microwave", "kettle", "bottom burner", "light switch"])
    ours = KitchenEnv()
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "raw_FrankaKitchen-v1_steps_per_s": env_steps_per_s(raw, args.env_steps),
        "KitchenEnv_steps_per_s": env_steps_per_s(ours, args.env_steps),
    }
    for name, rates in pretrain_samples_per_s(args.batch_size, args.train_steps, args.repeats).items():
        results[f"pretrain_{name}_samples_per_s_median"] = statistics.median(rates)
        results[f"pretrain_{name}_samples_per_s_all"] = [round(r) for r in rates]
    results["speedup"] = results["pretrain_fused_samples_per_s_median"] / results["pretrain_plain_samples_per_s_median"]
    results.update(time_breakdown(raw, args.batch_size, args.repeats))
    results["raw_env_step_ms"] = 1e3 / results["raw_FrankaKitchen-v1_steps_per_s"]
    results["train_step_ms"] = 1e3 * args.batch_size / results["pretrain_fused_samples_per_s_median"]

    for key, value in results.items():
        print(f"{key:42s} {value:.3g}" if isinstance(value, float) else f"{key:42s} {value}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"command": "python " + " ".join(sys.argv), **results}, f, indent=2)


if __name__ == "__main__":
    main()
