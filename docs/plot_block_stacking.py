"""Snapshots of one episode of the 11-block task: the whole table, and the 32 x 32 views an image
policy sees at the same steps.

    python docs/plot_block_stacking.py runs/<spirl_sac run>/checkpoint.pt --out docs/block_stacking_spirl.png
    python docs/plot_block_stacking.py checkpoints/block-stacking-image-skills-open-loop.pt \
        --out docs/block_stacking_prior.png   # the open-loop prior drew this figure

Given a spirl_sac.py run's checkpoint.pt, the policy's mean skill is executed (as in its evaluations);
given a spirl_pretrain.py checkpoint, skills are sampled from the learned prior p_a(z | s). Either
way each skill runs for H steps as spirl_sac.py runs it (spirl_sac.execute_skill: an open-loop decoder
gives its H actions at once, a closed-loop one each action from z and the current observation). The
scene is drawn from the state vector (blocks are drawn upright: the state has no block angles).
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
from matplotlib.patches import Rectangle  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import SpirlError  # noqa: E402
from envs.block_stacking import BLOCK_HALF, COLOURS, MAX_OPENING, TABLE_TOP, BlockStackingEnv, render_view  # noqa: E402
from spirl_pretrain import SkillModel, load_skill_model  # noqa: E402
from spirl_sac import execute_skill  # noqa: E402

FIX = ("pass runs/<run>/checkpoint.pt of a spirl_sac.py --env block_stacking run, or a spirl_pretrain.py checkpoint "
       "(shipped: checkpoints/block-stacking-image-skills.pt)")  # fmt: skip


def load_actor(path: str):
    """(skill model, choose(state, generator) -> skill z) from a spirl_sac.py or spirl_pretrain.py checkpoint;
    a one-line SpirlError that names the fix for a missing, unreadable or wrong one."""
    if os.path.isdir(path):
        inside = os.path.join(path, "checkpoint.pt")
        raise SpirlError(
            f"{path} is a folder, not a checkpoint; " + (f"pass {inside}" if os.path.isfile(inside) else FIX)
        )
    if not os.path.isfile(path):
        raise SpirlError(f"{path} does not exist; {FIX}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpirlError(f"cannot read {path} ({type(e).__name__}); it is corrupt or not a checkpoint: {FIX}") from None
    if not isinstance(ckpt, dict):
        raise SpirlError(f"{path} is not a checkpoint of spirl_sac.py or spirl_pretrain.py; {FIX}")
    try:
        if ckpt.get("kind") in ("spirl_sac", "spirl_sac_policy"):  # a run's checkpoint.pt or its final policy.pt
            from spirl_sac import make_policy, squash

            env_name = (ckpt["args"] if "args" in ckpt else ckpt["config"])["env"]  # "config" in older checkpoints
            model = SkillModel(**ckpt["skill_config"])
            model.load_state_dict(ckpt["skill_model"])
            policy = make_policy(model.skill_prior, prior_init=False)
            policy.load_state_dict(ckpt["policy"] if "policy" in ckpt else ckpt["learner"]["policy"])

            scale = (ckpt.get("args") or {}).get("squash_scale") or 1.0  # older runs: the authors' squash

            def choose(state, generator):  # the policy's mean skill, as spirl_sac.py's evaluations
                return squash(policy(torch.as_tensor(state)[None])[0], scale)[0]
        else:
            model, config = load_skill_model(path)
            env_name = config["env"]

            def choose(state, generator):  # z ~ p_a(z | s)
                mu, log_sigma = model.skill_prior(torch.as_tensor(state)[None])
                return (mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator))[0]
    except SpirlError as e:  # not a spirl_pretrain.py checkpoint either
        raise SpirlError(str(e) if "pass " in str(e) else f"{e}; {FIX}") from None  # name the fix once
    except (KeyError, RuntimeError, TypeError) as e:  # missing entries, or weights that do not fit the config
        raise SpirlError(f"{path} holds no usable skill model or policy ({type(e).__name__}); {FIX}") from None
    if env_name != "block_stacking":
        raise SpirlError(f"{path} was trained for --env {env_name}; {FIX}")
    return model.eval(), choose


@torch.no_grad()
def run_episode(model, choose, image: bool, seed: int) -> tuple[list[np.ndarray], list[int]]:
    """The states and blocks stacked at every step of one downstream episode."""
    env = Recorder(BlockStackingEnv.downstream(image=image))
    generator = torch.Generator().manual_seed(seed)
    observation, done = env.reset(seed=seed), False
    while not done:
        observation, _, terminated, truncated, _, _ = execute_skill(
            env, model.decoder, choose(observation, generator), observation
        )
        done = terminated or truncated
    return env.states, env.stacked


class Recorder:
    """The env, keeping every step's state and blocks stacked."""

    def __init__(self, env):
        self.env = env

    def reset(self, seed: int):
        observation, info = self.env.reset(seed=seed)
        self.states, self.stacked = [self.env.state()], [info["blocks_stacked"]]
        return observation

    def step(self, action):
        out = self.env.step(action)
        self.states.append(self.env.state())
        self.stacked.append(out[-1]["blocks_stacked"])
        return out


def draw_scene(ax, state: np.ndarray, half_length: float):
    colour = {k: np.array(v) / 255 for k, v in COLOURS.items()}
    ax.set_facecolor(colour["background"])
    ax.add_patch(Rectangle((-half_length, TABLE_TOP - 0.1), 2 * half_length, 0.1, color=colour["table"]))
    for side in (-1, 1):
        ax.add_patch(Rectangle((side * half_length - (side < 0) * 0.02, TABLE_TOP), 0.02, 0.7, color=colour["barrier"]))
    for y, z in state[8:].reshape(-1, 3)[:, 1:]:
        ax.add_patch(Rectangle((y - BLOCK_HALF, z - BLOCK_HALF), 2 * BLOCK_HALF, 2 * BLOCK_HALF, color=colour["block"]))
    y, z, opening = state[1], state[2], state[7]
    palm = (y - MAX_OPENING / 2 - 0.02, z + BLOCK_HALF + 0.005)
    ax.add_patch(Rectangle(palm, MAX_OPENING + 0.04, 0.02, color=colour["gripper"]))
    for side in (-1, 1):  # the fingers, 2 cm wide, inner faces `opening` apart
        finger = (y + side * opening / 2 - (side < 0) * 0.02, z - BLOCK_HALF + 0.005)
        ax.add_patch(Rectangle(finger, 0.02, 2 * BLOCK_HALF, color=colour["gripper"]))
    ax.set_xlim(-half_length - 0.05, half_length + 0.05)
    ax.set_ylim(TABLE_TOP - 0.06, 1.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="spirl_sac.py runs/<run>/checkpoint.pt, or a spirl_pretrain.py checkpoint")
    parser.add_argument("--out", default="docs/block_stacking.png")
    parser.add_argument("--snapshots", type=int, default=6, help="snapshots, evenly spread over the episode")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.snapshots < 1:
        sys.exit(f"error: --snapshots must be at least 1 (got {args.snapshots})")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        model, choose = load_actor(args.checkpoint)
    except SpirlError as e:
        sys.exit(f"error: {e}")
    except OSError as e:
        sys.exit(f"error: cannot create the folder of {args.out} ({e.strerror}); pass another --out")
    states, stacked = run_episode(model, choose, model.skill_prior.config.get("image", False), args.seed)
    half_length = BlockStackingEnv.downstream().half_length
    steps = np.linspace(0, len(states) - 1, args.snapshots).round().astype(int)
    fig, axes = plt.subplots(2, args.snapshots, figsize=(2.6 * args.snapshots, 3.4), height_ratios=(1, 1.1))
    for column, t in enumerate(steps):
        draw_scene(axes[0, column], states[t], half_length)
        axes[0, column].set_title(f"step {t}: {stacked[t]} stacked (best {max(stacked[: t + 1])})", fontsize=8)
        axes[1, column].imshow(render_view(states[t], half_length).transpose(1, 2, 0))
        axes[1, column].set_xticks([])
        axes[1, column].set_yticks([])
    axes[1, 0].set_ylabel("32 x 32 view", fontsize=8)
    fig.suptitle(
        f"{os.path.relpath(args.checkpoint)}, seed {args.seed}: at most {max(stacked)} blocks stacked", fontsize=9
    )
    fig.tight_layout()
    try:
        fig.savefig(args.out, dpi=110)
    except OSError as e:
        sys.exit(f"error: cannot write {args.out} ({e.strerror}); pass another --out")
    print(f"wrote {args.out}: {len(states) - 1} steps, at most {max(stacked)} blocks stacked, {stacked[-1]} at the end")


if __name__ == "__main__":
    main()
