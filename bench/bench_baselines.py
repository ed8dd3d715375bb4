"""Benchmark: ms per flat-SAC gradient step and env steps/s of baselines/sac.py on the kitchen.

    python bench/bench_baselines.py          # prints a table and writes bench/results/baselines.json

Flat SAC does one gradient step per env step, so its update sets the pace. Sizes: baselines/sac.py's kitchen
defaults (30-dim state, 9-dim action; the authors' flat SAC: policy 6 x 256, twin critics 3 x 256), batch 256.
- gradient step: median ms of one `sac_update` of baselines/sac.py (identical in bc_sac.py; flat_prior.py
  adds a prior pass), on 1 and 2 threads, next to
  - "plain": the textbook PyTorch update (two nn.Linear critics called one after the other, three
    optimisers with a backward each, requires_grad toggled around the actor loss), written here only as
    the reference point;
  - "compiled": torch.compile(sac_update) (mode default), measured to see whether it pays;
  - the floor: the update's matrix products alone (GFLOP counted) at the rate this machine reaches
    on their dominant shape.
- env steps/s: baselines/sac.py's training loop on FrankaKitchen-v1 while it learns (evaluations
  excluded, learning starts after a 560-step warm-up), next to the raw env with random actions.
- `--flat-prior-image`: instead, baselines/flat_prior.py's gradient step at its block-stacking sizes (the image policy
  and prior: conv encoder of the two frames, 6 x 128 MLP; twin critics 3 x 256 on the 41-dim state), with p(.|s) and
  p(.|s') read from the replay (as the script does) or computed in the update (two more passes of the image prior),
  writes bench/results/flat_prior_image.json.
Run it on an idle machine: the figures are medians but a busy core still skews them.
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
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from baselines import sac  # noqa: E402
from bench.bench_sac import raw_env_steps_per_s  # noqa: E402

STATE_DIM, ACTION_DIM, BATCH = 30, 9, 256


def filled_buffer(n: int = 20_000) -> sac.ReplayBuffer:
    g = torch.Generator().manual_seed(0)
    buffer = sac.ReplayBuffer(n, STATE_DIM, ACTION_DIM)
    buffer.states[:] = torch.randn(n, STATE_DIM, generator=g)
    buffer.actions[:] = torch.rand(n, ACTION_DIM, generator=g) * 2 - 1
    buffer.rewards[:] = (torch.rand(n, generator=g) < 0.01).float()
    buffer.next_states[:] = torch.randn(n, STATE_DIM, generator=g)
    buffer.terminals[:] = 0
    buffer.size = n
    return buffer


SIZES = sac.resolve_args(sac.Args(env="kitchen", device="cpu"))  # hidden/layers, critic_hidden/critic_layers


def mlp(n_in, n_out, hidden, layers):
    blocks, width = [], n_in
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
        width = hidden
    return nn.Sequential(*blocks, nn.Linear(width, n_out))


def plain_update_fn():
    """The textbook update, for reference: separate critics, three optimisers, requires_grad toggling."""
    policy = mlp(STATE_DIM, 2 * ACTION_DIM, SIZES.hidden, SIZES.layers)
    q1, q2, q1_t, q2_t = (mlp(STATE_DIM + ACTION_DIM, 1, SIZES.critic_hidden, SIZES.critic_layers) for _ in range(4))
    q1_t.load_state_dict(q1.state_dict())
    q2_t.load_state_dict(q2.state_dict())
    log_alpha = torch.zeros((), requires_grad=True)
    policy_opt = torch.optim.Adam(policy.parameters(), lr=3e-4)
    critic_opt = torch.optim.Adam([*q1.parameters(), *q2.parameters()], lr=3e-4)
    alpha_opt = torch.optim.Adam([log_alpha], lr=3e-4)

    def sample(states, g):
        mu, log_sigma = policy(states).chunk(2, -1)
        log_sigma = log_sigma.clamp(-10, 2)
        u = mu + log_sigma.exp() * torch.randn(mu.shape, generator=g)
        return torch.tanh(u), sac.squashed_log_prob(u, mu, log_sigma)

    def update(batch, g):
        s, a, r, s2, d = batch
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            a2, lp2 = sample(s2, g)
            x2 = torch.cat([s2, a2], -1)
            target = r + 0.99 * (1 - d) * (torch.min(q1_t(x2), q2_t(x2)).squeeze(-1) - alpha * lp2)
        x = torch.cat([s, a], -1)
        loss = F.mse_loss(q1(x).squeeze(-1), target) + F.mse_loss(q2(x).squeeze(-1), target)
        critic_opt.zero_grad()
        loss.backward()
        critic_opt.step()
        for p in [*q1.parameters(), *q2.parameters()]:
            p.requires_grad_(False)
        new, lp = sample(s, g)
        xn = torch.cat([s, new], -1)
        actor_loss = (alpha * lp - torch.min(q1(xn), q2(xn)).squeeze(-1)).mean()
        policy_opt.zero_grad()
        actor_loss.backward()
        policy_opt.step()
        for p in [*q1.parameters(), *q2.parameters()]:
            p.requires_grad_(True)
        alpha_loss = (log_alpha.exp() * (ACTION_DIM - lp.detach())).mean()
        alpha_opt.zero_grad()
        alpha_loss.backward()
        alpha_opt.step()
        with torch.no_grad():
            for t, p in zip([*q1_t.parameters(), *q2_t.parameters()], [*q1.parameters(), *q2.parameters()]):
                t.mul_(0.995).add_(p, alpha=0.005)
        return loss.detach()

    return update


def update_ms(variant: str, threads: int, repeats: int = 7, n: int = 50) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    buffer, g = filled_buffer(), torch.Generator().manual_seed(0)
    if variant == "plain":
        update = plain_update_fn()
    else:
        learner = sac.build_learner(SIZES)
        step = torch.compile(sac.sac_update) if variant == "compiled" else sac.sac_update

        def update(batch, g):
            return step(learner, batch, g)

    for _ in range(10):  # warm-up (and compilation)
        update(buffer.sample(BATCH, g), g)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            out = update(buffer.sample(BATCH, g), g)
        out.sum().item()  # one sync per n steps, as the training loop has
        times.append((time.perf_counter() - start) / n * 1e3)
    return statistics.median(times)


def matmul_floor_ms(threads: int) -> tuple[float, float]:
    """What the matrix products alone must cost: the update's matmul FLOPs (counted below) at this
    machine's measured rate for its dominant shape, a twin-critic layer (2 x 256 x 256 @ 256 x 256).
    Returns (GFLOP per update, floor in ms)."""
    torch.set_num_threads(threads)
    h, ch = SIZES.hidden, SIZES.critic_hidden  # multiply-adds per sample: one critic, the policy
    critic = (STATE_DIM + ACTION_DIM) * ch + (SIZES.critic_layers - 1) * ch * ch + ch
    policy = STATE_DIM * h + (SIZES.layers - 1) * h * h + h * 2 * ACTION_DIM
    # Twin critics: target forward, forward, backward (weights and inputs), actor forward and backward
    # (inputs only); policy: forward at s' and s, backward (weights and inputs).
    flop = 2 * BATCH * (2 * critic * (1 + 1 + 2 + 1 + 1) + policy * (1 + 1 + 2))
    x, w = torch.randn(2, BATCH, ch), torch.randn(2, ch, ch)
    for _ in range(20):
        torch.bmm(x, w)
    start = time.perf_counter()
    for _ in range(2000):
        torch.bmm(x, w)
    rate = 2 * 2 * BATCH * ch * ch * 2000 / (time.perf_counter() - start)
    return flop / 1e9, flop / rate * 1e3


def sac_env_steps_per_s(threads: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        rare = dict(eval_every=10**9, eval_episodes=1, checkpoint_every=10**9)
        args = sac.Args(env="kitchen", total_env_steps=3360, warmup_steps=560, threads=threads, **rare)
        result = sac.train(replace(args, run_name=os.path.join(folder, "run")))
    return result["learning_sps"]


def flat_prior_image_ms(stored_priors: bool, threads: int, repeats: int = 5, n: int = 10) -> float:
    """Median ms of one flat_prior.py update on block stacking, the prior's outputs stored or computed in the update."""
    from baselines import flat_prior
    from spirl_pretrain import IMAGE_DIM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    args = flat_prior.resolve_args(flat_prior.Args(env="block_stacking"))
    learner = flat_prior.build_learner(args, flat_prior.make_policy(args).eval().requires_grad_(False))
    buffer, g = flat_prior.ReplayBuffer(4096, 41, 3, IMAGE_DIM), torch.Generator().manual_seed(0)
    observations = torch.cat([torch.randn(4096, 41), torch.randint(0, 256, (4096, IMAGE_DIM)) / 255.0], dim=1)
    priors = torch.cat([learner.prior_of(batch) for batch in observations.split(512)])
    for i in range(4096):
        buffer.add(observations[i], torch.rand(3) * 2 - 1, 1.0, observations[i], False, priors[i], priors[i])

    def batch():
        sampled = buffer.sample(BATCH, g)
        return sampled if stored_priors else (*sampled[:5], None, None)  # None: computed in sample_action

    for _ in range(3):
        flat_prior.sac_update(learner, batch(), g)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            out = flat_prior.sac_update(learner, batch(), g)
        out.sum().item()
        times.append((time.perf_counter() - start) / n * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "baselines.json")
    parser.add_argument("--out", default=out)
    compiled = "leave out the torch.compile variant (its compilation takes a minute)"
    parser.add_argument("--skip-compiled", action="store_true", help=compiled)
    parser.add_argument("--flat-prior-image", action="store_true", help="only flat_prior.py's block-stacking update")
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    results = {"command": "python bench/bench_baselines.py " + " ".join(sys.argv[1:]), "machine": machine}
    if args.flat_prior_image:
        for threads in (1, 2):
            for stored in (True, False):
                ms = flat_prior_image_ms(stored, threads)
                key = f"priors {'stored' if stored else 'computed'}, {threads} thread{'s' * (threads > 1)}"
                results[key] = ms
                print(f"flat_prior.py update, block stacking, {key}: {ms:6.1f} ms", flush=True)
        out = os.path.join(os.path.dirname(args.out), "flat_prior_image.json")
        with open(out, "w") as f:
            json.dump(results, f, indent=2)
        return print(f"wrote {out}")
    results["update_ms"] = {}
    for threads in (1, 2):
        for variant in ("sac.py", "plain") + (() if args.skip_compiled else ("compiled",)):
            ms = update_ms(variant, threads)
            results["update_ms"][f"{variant}, {threads} thread{'s' * (threads > 1)}"] = ms
            print(f"gradient step, {variant:8s} {threads} thread(s): {ms:6.2f} ms", flush=True)
    results["matmul_floor_ms"] = {}
    for threads in (1, 2):
        gflop, floor = matmul_floor_ms(threads)
        results["update_gflop"] = gflop
        results["matmul_floor_ms"][f"{threads} thread{'s' * (threads > 1)}"] = floor
        rate = f"{gflop:.2f} GFLOP at the measured rate"
        print(f"gradient step, matrix products alone ({rate}), {threads} thread(s): {floor:6.2f} ms", flush=True)
    raw = raw_env_steps_per_s(2800)
    results["raw_FrankaKitchen-v1_steps_per_s"] = raw
    print(f"raw FrankaKitchen-v1, random actions: {raw:6.0f} env steps/s", flush=True)
    results["sac_py_env_steps_per_s"] = {}
    for threads in (1, 2):
        sps = sac_env_steps_per_s(threads)
        results["sac_py_env_steps_per_s"][f"{threads} thread{'s' * (threads > 1)}"] = sps
        print(f"baselines/sac.py on the kitchen, learning, {threads} thread(s): {sps:6.1f} env steps/s", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
