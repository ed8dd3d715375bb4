"""Exploration in the downstream maze (the paper's Fig. 5): where do different ways of acting go?

    python docs/plot_maze_exploration.py runs/maze_skills/checkpoint.pt --out docs/maze_exploration.png
    python docs/plot_maze_exploration.py runs/maze_skills/checkpoint.pt --flat-prior runs/<flat_prior run>/checkpoint.pt

For `--steps` env steps each (episodes of the downstream task's length, always from its start):
(a) skills sampled from the learned prior p_a(z | s) (a state or an image prior, as trained), (b) skills sampled from the skill space's own
distribution N(0, I), each decoded into H actions executed open-loop, (c) a flat single-step action
prior p(a | s) if `--flat-prior` gives a baselines/flat_prior.py run on the maze (its fitted prior,
sampled every step), (d) uniform random
actions. One panel each: the visited positions over the maze, start and goal marked.
"""

from __future__ import annotations

import argparse
import os
import sys

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import SpirlError  # noqa: E402
from envs.maze import MazeEnv  # noqa: E402
from spirl_pretrain import load_skill_model  # noqa: E402


@torch.no_grad()
def visited(env: MazeEnv, steps: int, choose_actions, seed: int) -> np.ndarray:
    """Positions visited in `steps` env steps; `choose_actions(state, rng)` gives the next actions."""
    rng, positions, episode = np.random.default_rng(seed), [], 0
    state, _ = env.reset(seed=seed)
    while len(positions) < steps:
        for action in choose_actions(state, rng):
            state, _, terminated, truncated, _ = env.step(action)
            positions.append(state[:2].copy())
            if terminated or truncated:
                episode += 1
                state, _ = env.reset(seed=seed + episode)
                break
    return np.asarray(positions[:steps])


def skill_actions(model, from_prior: bool):
    def choose(state, rng):
        if from_prior:
            mu, log_sigma = model.skill_prior(torch.as_tensor(state, dtype=torch.float32)[None])
            z = mu + torch.exp(log_sigma) * torch.as_tensor(rng.standard_normal(mu.shape), dtype=torch.float32)
        else:
            z = torch.as_tensor(rng.standard_normal((1, model.decoder.latent_dim)), dtype=torch.float32)
        return model.decoder(z)[0].clamp(-1, 1).numpy()

    return choose


def flat_prior_actions(path: str):
    """Sample a ~ p(a | s) every step from the action prior saved in a baselines/flat_prior.py run."""
    from baselines import flat_prior

    ckpt = flat_prior.read_run_checkpoint(path)
    if ckpt["config"]["env"] != "maze":
        raise SpirlError(f"{path} is a flat prior for --env {ckpt['config']['env']}; pass one trained with --env maze")
    prior = flat_prior.GaussianPolicy(4, 2, ckpt["config"]["hidden"], ckpt["config"]["layers"])
    prior.load_state_dict(ckpt["learner"]["action_prior"])

    def choose(state, rng):
        mu, log_sigma = prior(torch.as_tensor(state[:4], dtype=torch.float32)[None])
        action = mu + torch.exp(log_sigma) * torch.as_tensor(rng.standard_normal(mu.shape), dtype=torch.float32)
        return action.clamp(-1, 1).numpy()

    return choose


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prior_checkpoint", help="spirl_pretrain.py checkpoint for --env maze")
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per panel")
    parser.add_argument("--flat-prior", default=None, help="checkpoint.pt of a baselines/flat_prior.py run on the maze (optional)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/maze_exploration.png")
    args = parser.parse_args()
    try:
        model, config = load_skill_model(args.prior_checkpoint, env="maze")
    except SpirlError as e:  # missing file, or a checkpoint of another env: one line, no traceback
        raise SystemExit(f"error: {e}") from None
    env = MazeEnv.downstream(image=config["image"])  # an image prior sees the top-down frames
    panels = [("skills from the learned prior", skill_actions(model, True)),
              ("skills from N(0, I)", skill_actions(model, False))]  # fmt: skip
    if args.flat_prior:
        try:
            panels.append(("flat action prior p(a | s)", flat_prior_actions(args.flat_prior)))
        except SpirlError as e:
            raise SystemExit(f"error: {e}") from None
    panels.append(("random actions", lambda state, rng: rng.uniform(-1, 1, (1, 2))))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4))
    rows, cols = env.walls.shape
    extent = (-cols / 2, cols / 2, -rows / 2, rows / 2)
    start = env.reset(seed=0)[0][:2]
    for ax, (title, choose) in zip(axes, panels):
        positions = visited(env, args.steps, choose, args.seed)
        ax.imshow(env.walls, cmap="Greys", extent=extent, vmin=0, vmax=1.6)
        ax.scatter(positions[:, 0], positions[:, 1], s=0.3, alpha=0.15, color="tab:blue", rasterized=True)
        ax.plot(*start, "o", color="tab:green", ms=7, label="start")
        ax.plot(*env.goal, "*", color="tab:red", ms=12, label="goal")
        ax.set_title(f"{title}\n({args.steps:,} env steps)", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
