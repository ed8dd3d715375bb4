"""Exploration in the downstream maze (the paper's Fig. 5): where do different ways of acting go?

    python docs/plot_maze_exploration.py runs/maze_skills/checkpoint.pt --out docs/maze_exploration.png
    python docs/plot_maze_exploration.py runs/maze_skills/checkpoint.pt --flat-prior runs/<flat_prior run>/checkpoint.pt

For `--steps` env steps each (episodes of the downstream task's length, always from its start):
(a) skills sampled from the learned prior p_a(z | s) (a state or an image prior, as trained), (b) skills
sampled from the skill space's own distribution N(0, I), each decoded into H actions executed open-loop,
(c) a flat single-step action prior p(a | s) if `--flat-prior` gives a baselines/flat_prior.py run on the
maze (its fitted prior, sampled every step), (d) uniform random actions. One panel each: the visited
positions over the maze, start and goal marked.
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
        observation = torch.as_tensor(state, dtype=torch.float32)[None]
        if from_prior:
            mu, log_sigma = model.skill_prior(observation)
            z = mu + torch.exp(log_sigma) * torch.as_tensor(rng.standard_normal(mu.shape), dtype=torch.float32)
        else:
            z = torch.as_tensor(rng.standard_normal((1, model.decoder.latent_dim)), dtype=torch.float32)
        return model.decoder.plan(z, observation)[0].clamp(-1, 1).numpy()  # app. D's decoder also reads the state

    return choose


def load_prior(path: str):
    """(skill model, config) of a spirl_pretrain.py checkpoint for the maze; else a one-line SpirlError."""
    fix = "pass the checkpoint.pt of a spirl_pretrain.py --env maze run (shipped: checkpoints/maze-image-skills.pt)"
    if os.path.isdir(path):
        inside = os.path.join(path, "checkpoint.pt")
        raise SpirlError(
            f"{path} is a folder, not a checkpoint; " + (f"pass {inside}" if os.path.isfile(inside) else fix)
        )
    if not os.path.isfile(path):
        raise SpirlError(f"{path} does not exist; {fix}")
    try:
        model, config = load_skill_model(path)
    except SpirlError as e:  # unreadable, or not a spirl_pretrain.py checkpoint
        raise SpirlError(str(e) if "pass " in str(e) else f"{e}; {fix}") from None  # name the fix once
    except (KeyError, RuntimeError, TypeError) as e:  # weights that do not fit the stored config
        raise SpirlError(f"{path} holds no usable skill model ({type(e).__name__}); {fix}") from None
    if config.get("env") != "maze":
        raise SpirlError(f"{path} is a skill model for --env {config.get('env')}; {fix}")
    return model, config


def flat_prior_actions(path: str):
    """Sample a ~ p(a | s) every step from the action prior saved in a baselines/flat_prior.py run."""
    from baselines import flat_prior

    fix = "pass runs/<run>/checkpoint.pt of a baselines/flat_prior.py --env maze run"
    if not os.path.isfile(path):
        raise SpirlError(f"--flat-prior {path} {'is a folder' if os.path.isdir(path) else 'does not exist'}; {fix}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpirlError(f"cannot read --flat-prior {path} ({type(e).__name__}); {fix}") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "flat_prior":
        raise SpirlError(f"--flat-prior {path} is not a baselines/flat_prior.py checkpoint; {fix}")
    settings = ckpt.get("args", ckpt.get("config", {}))  # "config" in older checkpoints
    if settings.get("env") != "maze":
        raise SpirlError(f"--flat-prior {path} is a flat prior for --env {settings.get('env')}; {fix}")
    try:
        batch_norm = settings.get("batch_norm", False)  # absent in checkpoints from before the option
        prior = flat_prior.GaussianPolicy(4, 2, settings["hidden"], settings["layers"], batch_norm=batch_norm).eval()
        prior.load_state_dict(ckpt["learner"]["action_prior"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise SpirlError(f"--flat-prior {path} holds no usable action prior ({type(e).__name__}); {fix}") from None

    def choose(state, rng):
        mu, log_sigma = prior(torch.as_tensor(state[:4], dtype=torch.float32)[None])
        action = mu + torch.exp(log_sigma) * torch.as_tensor(rng.standard_normal(mu.shape), dtype=torch.float32)
        return action.clamp(-1, 1).numpy()

    return choose


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prior_checkpoint", help="spirl_pretrain.py checkpoint for --env maze")
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per panel")
    parser.add_argument(
        "--flat-prior", default=None, help="checkpoint.pt of a baselines/flat_prior.py run on the maze (optional)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/maze_exploration.png")
    args = parser.parse_args(argv)
    if args.steps < 1:
        sys.exit(f"error: --steps must be at least 1 (got {args.steps})")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        model, config = load_prior(args.prior_checkpoint)
        flat = flat_prior_actions(args.flat_prior) if args.flat_prior else None
    except SpirlError as e:  # a missing, unreadable or wrong checkpoint: one line, no traceback
        sys.exit(f"error: {e}")
    except OSError as e:
        sys.exit(f"error: cannot create the folder of {args.out} ({e.strerror}); pass another --out")
    view = config.get("view", "camera")  # the frames the prior was trained on
    env = MazeEnv.downstream(image=config["image"], view=view)  # an image prior sees the top-down frames
    panels = [("skills from the learned prior", skill_actions(model, True)),
              ("skills from N(0, I)", skill_actions(model, False))]  # fmt: skip
    if flat is not None:
        panels.append(("flat action prior p(a | s)", flat))
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
    try:
        fig.savefig(args.out, dpi=110, bbox_inches="tight")
    except OSError as e:
        sys.exit(f"error: cannot write {args.out} ({e.strerror}); pass another --out")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
