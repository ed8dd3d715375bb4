"""Do a run's critics track the returns it collected? Q-values against Monte-Carlo returns on its own replay.

    python bench/critic_check.py runs/kitchen_fig4/kitchen__spirl__s1/checkpoint.pt
    python bench/critic_check.py runs/a/checkpoint.pt runs/b/checkpoint.pt --out /tmp/critics.json

For a spirl_sac.py or baselines/ssp.py checkpoint (skill-space critics, replay included): min_i Q_i(s, z) of every
stored transition beside its discounted return to the episode's end, sum_k gamma^k r_{t+k}, cut at the time limit
(no bootstrap), by position in the episode and by quarter of the replay (oldest first). The Q-values are soft:
they also hold the future -alpha KL (SPiRL) or entropy (SSP) terms, so a healthy critic sits near or below the
returns. A critic far above them everywhere has drifted: nothing the episodes gave supports its values, and a
policy that maximises it is led away (docs/kitchen.md: the collapse this check found). Only a few seconds of CPU.
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import SpirlError  # noqa: E402
from envs.runs import read_checkpoint  # noqa: E402
from spirl_sac import TwinCritic  # noqa: E402

POSITIONS = (0, 5, 10, 15, 20, 25)


def episode_ends(states, next_states, terminals):
    """True where a stored transition is its episode's last: a termination, or the next transition does not start
    from its next state (the replay holds whole episodes in order; a time-limit end is found the same way)."""
    ends = terminals.bool().clone()
    ends[:-1] |= (next_states[:-1] - states[1:]).abs().amax(1) > 1e-6
    ends[-1] = True
    return ends


def returns_to_go(rewards, ends, gamma):
    """sum_k gamma^k r_{t+k} within each episode, and each transition's position in its episode."""
    n = len(rewards)
    returns, positions = torch.zeros(n), torch.zeros(n, dtype=torch.long)
    total = 0.0
    for i in range(n - 1, -1, -1):
        total = float(rewards[i]) + gamma * (0.0 if ends[i] else total)
        returns[i] = total
    start = 0
    for i in range(n):
        positions[i] = i - start
        if ends[i]:
            start = i + 1
    return returns, positions


def check(path: str) -> dict:
    try:
        ckpt = read_checkpoint(path, "spirl_sac", "spirl_sac.py")
    except SpirlError as e:
        if "is not a" not in str(e):
            raise  # missing, unreadable or from an older version: that message names the fix
        try:
            ckpt = read_checkpoint(path, "ssp", "baselines/ssp.py")
        except SpirlError:
            raise SpirlError(f"{path} is neither a spirl_sac.py nor a baselines/ssp.py checkpoint; pass one") from None
    args, config, replay = ckpt["args"], ckpt["skill_config"], ckpt["replay"]
    n = replay["size"]
    if n == 0 or n != replay["next"]:
        raise SpirlError(f"{path}: the replay is empty or has wrapped around; this check needs whole episodes in order")
    critic = TwinCritic(config["state_dim"], config["latent_dim"], args["critic_hidden"], args["critic_layers"])
    critic.load_state_dict(ckpt["learner"]["critic"])
    states, skills, rewards, next_states, terminals = (
        replay[k][:n].float() for k in ("states", "skills", "rewards", "next_states", "terminals")
    )
    with torch.no_grad():
        q = torch.cat([critic(s, z).min(0).values for s, z in zip(states.split(4096), skills.split(4096))])
    ends = episode_ends(states, next_states, terminals)
    returns, positions = returns_to_go(rewards, ends, args["gamma"])
    quarters = []
    for part in torch.arange(n).chunk(4):
        quarters.append(
            {"q": q[part].mean().item(), "q_max": q[part].max().item(), "return": returns[part].mean().item()}
        )
    by_position = {}
    for p in POSITIONS:
        mask = positions == p
        if mask.any():
            by_position[p] = {"q": q[mask].mean().item(), "return": returns[mask].mean().item()}
    return {
        "checkpoint": path,
        "env_steps": ckpt["env_steps"],
        "transitions": n,
        "episodes": int(ends.sum()),
        "terminal_fraction": terminals.mean().item(),
        "quarters": quarters,
        "by_position": by_position,
    }


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint.pt of spirl_sac.py or baselines/ssp.py runs")
    parser.add_argument("--out", help="also write the figures as JSON here")
    opts = parser.parse_args(argv)
    results = []
    for path in opts.checkpoints:
        r = check(path)
        results.append(r)
        print(f"{path}: {r['env_steps']} env steps, {r['episodes']} episodes, {r['terminal_fraction']:.1%} terminal")
        for i, quarter in enumerate(r["quarters"]):
            q, q_max, g = quarter["q"], quarter["q_max"], quarter["return"]
            print(f"  replay quarter {i + 1}: Q {q:.2f} (max {q_max:.2f}), return {g:.2f}")
        for p, v in r["by_position"].items():
            print(f"  high-level step {p:2d}: Q {v['q']:.2f}, return {v['return']:.2f}")
    if opts.out:
        with open(opts.out, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    try:
        main()
    except SpirlError as e:  # bad input: one line, no traceback
        sys.exit(f"error: {e}")
