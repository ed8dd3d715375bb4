"""Benchmark: how far a SPiRL policy sits from its prior, and whether it comes back with each kind of clamp.

    python bench/bench_clamps.py runs/<run>/checkpoint.pt                  # writes bench/results/clamps.json
    python bench/bench_clamps.py runs/<run>/checkpoint.pt --updates 5000 --out /tmp/clamps.json
    python bench/bench_clamps.py runs/<run>/checkpoint.pt --first-state 25000 --states 25000   # an older stretch

Reads a spirl_sac.py checkpoint (policy, critics, alpha and replay buffer) and reports, on the replay's latest
`--states` states (or `--states` from replay index `--first-state` on), the policy pi(z|s) against the prior p_a(z|s):
the median KL (unclamped), the share of states within delta, the mean log sigma of each, and the mean |mu| of pi.
Then, twice from that same checkpoint, it runs `--updates` gradient steps of Algorithm 1 (spirl_sac.sac_update,
batches from the replay; no env steps): once with the authors' hard clamps (KL at 100, log sigma at [-10, 2]), once
with --straight-through-clamps (the same values, the gradients passing), and reports the same figures every fifth of
the way.

Why: with (almost) no reward, alpha sinks while pi stays on p_a (KL far below delta); once alpha is small, the
critics' noise can narrow pi to log sigma -10 and push mu far out within a few thousand updates, past both clamps on
every state. Beyond them the hard clamps give no gradient, so nothing brings pi back, however large alpha grows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import spirl_sac  # noqa: E402
from envs import SpirlError, runs  # noqa: E402
from spirl_pretrain import gaussian_kl, load_skill_model  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "clamps.json")


def policy_vs_prior(learner, states: torch.Tensor, priors: torch.Tensor, delta: float) -> dict:
    with torch.no_grad():
        mu, log_sigma = learner.policy(states)
        prior_mu, prior_log_sigma = priors.chunk(2, dim=-1)
        kl = gaussian_kl(mu, log_sigma, prior_mu, prior_log_sigma).sum(-1)
    return {
        "kl_median": round(kl.median().item(), 3),
        "share_within_delta": round((kl <= delta).float().mean().item(), 3),
        "policy_log_sigma": round(log_sigma.mean().item(), 3),
        "prior_log_sigma": round(prior_log_sigma.mean().item(), 3),
        "policy_abs_mu": round(mu.abs().mean().item(), 3),
        "alpha": round(learner.log_alpha.exp().item(), 4),
    }


def load(checkpoint: str, straight_through: bool):
    """The run's learner (with the chosen clamps) and replay buffer, as they were at the checkpoint."""
    ckpt = runs.read_checkpoint(checkpoint, "spirl_sac", "spirl_sac.py")
    args = replace(runs.resumed_args(spirl_sac.Args(), ckpt), device="cpu", straight_through_clamps=straight_through)
    skill_model, skill_config = load_skill_model(args.prior_checkpoint, env=args.env)
    skill_model.load_state_dict(ckpt["skill_model"])
    learner = spirl_sac.build_learner(args, skill_model.requires_grad_(False), skill_config)
    runs.load_learner_state(learner, ckpt["learner"])
    image_dim = ckpt["replay"]["frames"].shape[1]
    buffer = spirl_sac.ReplayBuffer(
        ckpt["replay"]["size"], skill_config["state_dim"], skill_config["latent_dim"], image_dim
    )
    runs.load_replay_state(buffer, ckpt["replay"])
    return args, learner, buffer, ckpt["env_steps"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="runs/<run>/checkpoint.pt of a spirl_sac.py run")
    parser.add_argument("--updates", type=int, default=5000, help="gradient steps from the checkpoint, per clamp kind")
    parser.add_argument("--states", type=int, default=2000, help="the replay's latest states to measure on")
    parser.add_argument(
        "--first-state", type=int, default=None, help="measure on --states states from this replay index on instead"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the replay batches and skill samples")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=RESULTS, help="where the JSON goes")
    a = parser.parse_args(argv)
    if a.updates < 5 or a.states < 1 or (a.first_state is not None and a.first_state < 0):
        sys.exit(
            f"error: --updates must be at least 5, --states at least 1 and --first-state at least 0 "
            f"(got {a.updates}, {a.states}, {a.first_state})"
        )
    torch.set_num_threads(a.threads)
    figures: dict = {"checkpoint": a.checkpoint, "updates": a.updates, "first_state": a.first_state, "states": a.states}
    for kind in ("hard", "straight_through"):
        try:
            args, learner, buffer, env_steps = load(a.checkpoint, kind == "straight_through")
        except SpirlError as e:
            sys.exit(f"error: {e}")
        if a.first_state is not None and a.first_state >= buffer.size:
            sys.exit(f"error: --first-state {a.first_state} is past the replay's {buffer.size} transitions")
        first = max(0, buffer.size - a.states) if a.first_state is None else a.first_state
        which = torch.arange(first, min(first + a.states, buffer.size))
        measured = buffer._observations(buffer.states, buffer.frames, which)
        priors = buffer.priors[which]
        figures |= {
            "env_steps": env_steps,
            "delta": args.delta,
            "at_checkpoint": policy_vs_prior(learner, measured, priors, args.delta),
        }
        generator, trace = torch.Generator().manual_seed(a.seed), {}
        for step in range(1, a.updates + 1):
            spirl_sac.sac_update(learner, buffer.sample(args.batch_size, generator), generator)
            if step % (a.updates // 5) == 0:
                trace[str(step)] = policy_vs_prior(learner, measured, priors, args.delta)
                print(kind, step, trace[str(step)], flush=True)
        figures[kind] = trace
    print(json.dumps(figures, indent=2))
    try:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(figures, f, indent=2)
    except OSError as e:
        sys.exit(f"error: cannot write {a.out} ({e.strerror}); pass another --out")
    return figures


if __name__ == "__main__":
    main()
