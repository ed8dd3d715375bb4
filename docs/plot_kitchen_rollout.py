"""The paper's Fig. 8: one kitchen episode of a trained policy as a filmstrip, completed subtasks marked.

    python docs/plot_kitchen_rollout.py runs/<run>/checkpoint.pt --out docs/fig8_spirl.png
    python docs/plot_kitchen_rollout.py runs/<run>/policy.pt --every 40 --seed 3 --out docs/fig8_ssp.png

Reads a checkpoint.pt or policy.pt of spirl_sac.py, baselines/ssp.py (skill policies) or baselines/sac.py,
bc_sac.py, flat_prior.py (flat policies), runs one downstream episode with the policy mean (as the evaluations
do) and draws a frame every --every env steps with the subtasks completed so far. The frames come from MuJoCo's
offscreen renderer (envs/video.py), which needs OpenGL (EGL or OSMesa): where there is none, one line says what
to install.
"""

from __future__ import annotations

import argparse
import os
import sys

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import SpirlError, make_env  # noqa: E402
from envs.video import KitchenFrames  # noqa: E402

FIX = "pass runs/<run>/checkpoint.pt or policy.pt of a kitchen run of spirl_sac.py or baselines/"
SKILL_KINDS = {"spirl_sac": "spirl_sac", "ssp": "baselines.ssp"}
FLAT_KINDS = {"sac": "baselines.sac", "bc_sac": "baselines.bc_sac", "flat_prior": "baselines.flat_prior"}


def load_policy(path: str):
    """(act(state) -> the env actions of the policy mean's next choice, args dict) from a run's checkpoint."""
    import importlib

    if not os.path.exists(path):
        raise SpirlError(f"{path} does not exist; {FIX}")
    if os.path.isdir(path):
        inside = os.path.join(path, "checkpoint.pt")
        raise SpirlError(
            f"{path} is a folder; pass {inside}" if os.path.isfile(inside) else f"{path} is a folder; {FIX}"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpirlError(f"cannot read {path} ({type(e).__name__}); {FIX}") from None
    kind = ckpt.get("kind", "").removesuffix("_policy") if isinstance(ckpt, dict) else ""
    if kind not in SKILL_KINDS | FLAT_KINDS:
        raise SpirlError(f"{path} is not a checkpoint of an RL run (it is {kind or 'something else'}); {FIX}")
    module = importlib.import_module((SKILL_KINDS | FLAT_KINDS)[kind])
    args = module.Args(**{k: v for k, v in ckpt["args"].items() if k in module.Args.__dataclass_fields__})
    if args.env != "kitchen":
        raise SpirlError(f"{path} is a run on --env {args.env}; {FIX}")
    weights = ckpt["policy"] if "policy" in ckpt else ckpt["learner"]["policy"]
    if kind in SKILL_KINDS:
        from spirl_pretrain import SkillModel, load_skill_model

        if "skill_model" in ckpt:  # a checkpoint.pt holds its skill model
            model = SkillModel(**ckpt["skill_config"]).eval()
            model.load_state_dict(ckpt["skill_model"])
        else:  # a policy.pt names it
            model = load_skill_model(args.prior_checkpoint)[0]
        if kind == "spirl_sac":  # the prior's architecture
            policy = module.make_policy(model.skill_prior, prior_init=False)
        else:  # baselines/ssp.py: the authors' SSP policy, sized by its run's flags
            config = ckpt["skill_config"]
            policy = module.GaussianPolicy(config["state_dim"], config["latent_dim"], args.hidden, args.layers)
        policy.load_state_dict(weights)
        policy.eval()
        scale = getattr(args, "squash_scale", None) or 1.0

        squash = {"scale": scale} if kind == "spirl_sac" else {}  # baselines/ssp.py keeps the authors' squash

        def act(env, state):  # one skill: H env steps, as the evaluations run it
            skill = module.choose_skill(policy, state, None, deterministic=True, **squash)
            return module.execute_skill(env, model.decoder, skill, state)[:5]
    else:
        policy = module.make_policy(args) if hasattr(module, "make_policy") else None
        if policy is None:
            from envs import env_spec

            spec = env_spec(args.env)
            policy = module.GaussianPolicy(spec["state_dim"], spec["action_dim"], args.hidden, args.layers)
        policy.load_state_dict(weights)
        policy.eval()

        def act(env, state):  # one env step
            action = module.choose_action(policy, state, None, deterministic=True)
            return env.step(action)[:4] + (1,)

    return act, kind


@torch.no_grad()
def filmstrip(path: str, out: str, every: int, seed: int, columns: int):
    act, kind = load_policy(path)
    env = make_env("kitchen")
    render = KitchenFrames(env)
    state, info = env.reset(seed=seed)
    frames, labels, step, done = [render()], ["start"], 0, False
    completed = ()
    while not done:
        before = step
        state, _, terminated, truncated, steps = act(env, state)
        step += steps
        done = terminated or truncated
        new = env.completed_tasks
        if step // every > before // every or done or new != completed:
            label = f"step {step}" + (f": {new[-1]} done" if new != completed else "")
            frames.append(render())
            labels.append(label)
        completed = new
    rows = -(-len(frames) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, frame, label in zip(axes.flat, frames, labels):
        ax.imshow(frame)
        ax.set_title(label, fontsize=8, color="green" if "done" in label else "black")
    fig.suptitle(f"{kind}: {len(completed)} of 4 subtasks ({', '.join(completed) or 'none'}), env seed {seed}")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}: {len(frames)} frames, {len(completed)} subtasks completed")


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="runs/<run>/checkpoint.pt or policy.pt of a kitchen RL run")
    parser.add_argument("--out", default="docs/fig8.png")
    parser.add_argument("--every", type=int, default=30, help="env steps between frames")
    parser.add_argument("--seed", type=int, default=0, help="env seed of the episode")
    parser.add_argument("--columns", type=int, default=6)
    args = parser.parse_args(argv)
    try:
        if args.every < 1 or args.columns < 1:
            raise SpirlError("--every and --columns must be at least 1")
        filmstrip(args.checkpoint, args.out, args.every, args.seed, args.columns)
    except SpirlError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
