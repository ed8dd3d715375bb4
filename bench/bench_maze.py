"""Facts about the maze task and its data: how far the goal is, how far random actions get, what the planner's
episodes look like, how much two stacked frames show, and how fast the env and its frames run.

    python bench/bench_maze.py                                   # writes bench/results/maze.json
    python bench/bench_maze.py --frames-out docs/maze_frames.png # and sample frame pairs of the camera view

- the downstream start-goal distance along the shortest path (cells);
- uniform random actions in the downstream maze: the largest straight-line distance from the start
  within an episode, and the steps spent within the goal threshold, over `--episodes` episodes;
- skills in the downstream maze, from its start, `--skill-episodes` episodes each: sampled from the shipped image
  prior (what SPiRL's policy starts as; `--skill-ways` also runs them squashed as spirl_sac.py executes them), and
  z uniform in [-2, 2]^|Z| (SSP's warm-up); how close each episode gets to the goal along the grid (cells; median and
  quartiles), how many distinct cells it visits (the prior's exploration: SPiRL's policy starts as the prior and,
  without reward, stays within a KL of delta of it) and in how many it reaches the goal; `--skills-only` measures
  just these, to judge a pretraining checkpoint before RL; a closed-loop model's skills are decoded step by step;
- `--junction-probes` episodes of the prior's skills at the goal's route's narrow spots (JUNCTIONS): the agent placed
  there moving, or at rest, and the share of episodes in which the skills get through within 20 skills;
- `--planner-episodes` episodes of envs/maze_demos.py's planner (the data's): median length, the share cut
  at 500 actions, speed percentiles, the share of steps that brake, cells covered per 10-step skill, and the
  share of consecutive camera frames that are identical (two stacked frames must show motion);
- env steps/s of a training env (new layout every 500 steps) and of the image env, and camera frames/s in
  batches of 256 (spirl_pretrain.py renders the data's frames per batch); the renderer is numpy.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from envs.maze import (  # noqa: E402
    DOWNSTREAM_GOAL,
    DOWNSTREAM_START,
    MazeEnv,
    distances_from,
    downstream_layout,
    render,
    shortest_path,
    training_task,
    xy_to_cell,
)


@dataclass
class Args:
    episodes: int = 10
    """random-action episodes in the downstream maze (2000 steps each)"""
    planner_episodes: int = 100
    """episodes of the data's planner (envs/maze_demos.py) to measure"""
    out: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "maze.json")
    """where to write the figures"""
    frames_out: str | None = None
    """also draw sample (previous, current) frame pairs of planner episodes to this PNG"""
    skill_episodes: int = 30
    """downstream episodes per way of choosing skills (prior samples, uniform z); 0 leaves them out"""
    skill_checkpoint: str = os.path.join(REPO_ROOT, "checkpoints", "maze-image-skills.pt")
    """the skill model whose prior and decoder the skill episodes use"""
    skills_only: bool = False
    """measure only the skill episodes of --skill-checkpoint (printed; written only to a non-default --out)"""
    skill_ways: tuple[Literal["prior", "prior_tanh", "prior_tanh2", "uniform"], ...] = ("prior", "uniform")
    """ways of choosing skills for the skill episodes: prior (z = u, u ~ p_a(z | s)), prior_tanh (z = 2 tanh(u): what
    spirl_sac.py executes with --squash-scale 1, the maze's default, before any update), prior_tanh2 (z = 2 tanh(u / 2),
    --squash-scale 2), uniform (z in [-2, 2]^|Z|)"""
    route_oracle: int = 0
    """episodes of the route oracle (`route_oracle`: the controller's actions along the shortest path, as skills, and
    their prior gap against delta) for --skill-checkpoint (with --skills-only too; 0 leaves it out)"""
    junction_probes: int = 0
    """episodes per JUNCTIONS case of the prior's skills at the route's narrow spots (with --skills-only too)"""


# The downstream route's narrow spots: (what, start cell, velocity (x, y) in cells/s, cells that count as through).
# The route leaves the room below the start through a one-cell corridor (row 14, columns 18-20) and ends in a
# two-cell one (columns 8-9, rows 9-17) down to the goal. PointMaze's +y is up the rows. 3 cells/s: about the
# planner's median speed.
JUNCTIONS = (
    ("into the one-cell corridor, moving left at its mouth", (14, 22), (-3.0, 0.0), ((14, 18), (14, 17), (13, 17))),
    ("into the one-cell corridor, at rest in its mouth", (14, 21), (0.0, 0.0), ((14, 18), (14, 17), (13, 17))),
    ("down the goal's corridor, moving down", (10, 9), (0.0, -3.0), ((16, 8), (16, 9), (17, 8), (17, 9))),
)


def steps_per_second(env: MazeEnv, steps: int = 5000) -> float:
    env.reset(seed=0)
    rng, start = np.random.default_rng(0), time.time()
    for t in range(steps):
        _, _, _, truncated, _ = env.step(rng.uniform(-1, 1, 2))
        if truncated:
            env.reset()
    return steps / (time.time() - start)


def episode_frames(episode: dict) -> np.ndarray:
    """(T + 1, 3, 32, 32) camera frames of a planner episode, rendered from its states as the data's are."""
    task, states = training_task(episode["seed"]), episode["states"]
    n = len(states)
    return render(np.repeat(task.walls[None], n, 0), states, np.repeat(task.goal[None], n, 0))


def planner_figures(episodes: list[dict]) -> dict:
    lengths = np.array([len(e["actions"]) for e in episodes])
    speeds = np.concatenate([np.linalg.norm(e["states"][:, 2:], axis=1) for e in episodes])
    braking = np.mean(np.concatenate([np.diff(np.linalg.norm(e["states"][:, 2:], axis=1)) < 0 for e in episodes]))
    skill = np.concatenate([np.linalg.norm(e["states"][10:, :2] - e["states"][:-10, :2], axis=1) for e in episodes])
    identical = [(f[1:] == f[:-1]).all(axis=(1, 2, 3)) for f in map(episode_frames, episodes)]
    return {
        "episodes": len(episodes),
        "median_length": float(np.median(lengths)),
        "cut_at_500_actions": float(np.mean([not e["terminated"] for e in episodes])),
        "speed_percentiles_10_50_90": [round(float(v), 2) for v in np.percentile(speeds, [10, 50, 90])],
        "braking_steps": round(float(braking), 3),
        "cells_per_10_step_skill": round(float(skill.mean()), 3),
        "identical_consecutive_frames": round(float(np.mean(np.concatenate(identical))), 4),
    }


def frames_per_second(episodes: list[dict], batch: int = 256, repeats: int = 5) -> float:
    task = training_task(episodes[0]["seed"])
    states = np.concatenate([e["states"] for e in episodes])[:batch]
    walls, goals = np.repeat(task.walls[None], len(states), 0), np.repeat(task.goal[None], len(states), 0)
    start = time.time()
    for _ in range(repeats):
        render(walls, states, goals)
    return repeats * len(states) / (time.time() - start)


def draw_frame_pairs(episodes: list[dict], path: str, pairs: int = 4):
    """A PNG of `pairs` (previous, current) frame pairs from the first planner episode, upscaled 8x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episode = max(episodes[:10], key=lambda e: len(e["actions"]))
    frames = episode_frames(episode)
    steps = np.linspace(20, len(frames) - 1, pairs).astype(int)
    fig, axes = plt.subplots(2, pairs, figsize=(2.2 * pairs, 4.6))
    for column, t in enumerate(steps):
        speed = np.linalg.norm(episode["states"][t, 2:])
        for row, (frame, name) in enumerate(((frames[t - 1], f"step {t - 1}"), (frames[t], f"step {t}"))):
            axes[row, column].imshow(frame.transpose(1, 2, 0), interpolation="nearest")
            axes[row, column].set_title(name + (f", speed {speed:.1f}" if row else ""), fontsize=8)
            axes[row, column].axis("off")
    fig.suptitle("maze camera frames (previous above, current below), envs/maze.py render_views", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_skill(model, env: MazeEnv, z, observation: np.ndarray, steps: int):
    """Execute skill z (1, |Z|) for up to `steps` env steps from `observation`, as spirl_sac.py does: an open-loop
    decoder's H actions planned at the start, a closed-loop decoder's action decoded from each step's observation.
    Yields each step's (observation, reward)."""
    import torch

    def as_input(o):
        return torch.as_tensor(o, dtype=torch.float32)[None]

    with torch.no_grad():
        planned = None if model.decoder.closed_loop else model.decoder.plan(z, as_input(observation))[0]
    for t in range(min(steps, model.decoder.skill_horizon)):
        with torch.no_grad():
            action = planned[t] if planned is not None else model.decoder(as_input(observation), z)[0]
        observation, reward, *_ = env.step(action.clamp(-1, 1).numpy())
        yield observation, reward


def skill_exploration(checkpoint: str, episodes: int, ways=("prior", "uniform")) -> dict:
    """Downstream episodes from the start with a skill every H steps, executed as spirl_sac.py executes them (an
    open-loop decoder's plan, or a closed-loop decoder step by step): from the
    prior p_a(z | s) (as sampled, or squashed as spirl_sac.py executes a policy's samples), or uniform in
    [-2, 2]^|Z|. Per way: the closest grid distance to the goal, the distinct cells visited, goal reached."""
    import torch

    from spirl_pretrain import load_skill_model
    from spirl_sac import squash

    model, config = load_skill_model(checkpoint)
    env = MazeEnv.downstream(image=config["image"], view=config.get("view", "camera"))
    walls = downstream_layout()
    to_goal = distances_from(walls, DOWNSTREAM_GOAL)
    figures = {}
    for way in ways:
        rng, closest, visited, reached = np.random.default_rng(0), [], [], 0
        for episode in range(episodes):
            state, _ = env.reset(seed=episode)
            best, hit, steps, cells_seen = int(to_goal[DOWNSTREAM_START]), False, 0, set()
            while steps < env.max_episode_steps:
                observation = torch.as_tensor(state, dtype=torch.float32)[None]
                with torch.no_grad():
                    if way.startswith("prior"):
                        mu, log_sigma = model.skill_prior(observation)
                        noise = torch.as_tensor(rng.standard_normal(mu.shape), dtype=torch.float32)
                        z = mu + torch.exp(log_sigma) * noise
                        z = z if way == "prior" else squash(z, scale=2.0 if way == "prior_tanh2" else 1.0)
                    else:
                        z = torch.as_tensor(rng.uniform(-2, 2, (1, model.decoder.latent_dim)), dtype=torch.float32)
                for state, reward in run_skill(model, env, z, state, env.max_episode_steps - steps):
                    steps, hit = steps + 1, hit or reward > 0
                    cell = xy_to_cell(walls, state[:2])
                    cells_seen.add(cell)
                    best = min(best, int(to_goal[cell])) if to_goal[cell] >= 0 else best
            closest.append(best)
            visited.append(len(cells_seen))
            reached += hit
        quartiles = [float(q) for q in np.percentile(closest, [25, 50, 75])]
        seen = [float(q) for q in np.percentile(visited, [25, 50, 75])]
        figures[way] = {"closest_cells_quartiles": quartiles, "cells_visited_quartiles": seen}
        figures[way] |= {"episodes_reaching_goal": reached, "episodes": episodes}
        reach = f"goal reached in {reached}/{episodes}"
        print(f"skills ({way}): closest to the goal {quartiles} cells, {seen} cells visited, {reach}")
    return figures


def route_oracle(checkpoint: str, episodes: int) -> dict:
    """The route to the goal as skills, and what following it costs against the prior. Every H steps the data's
    controller (envs/maze_demos.py, noise-free) runs H steps along the current cell's shortest path to the goal on
    the live env, the env is put back, and its actions are encoded, decoded and executed: does the skill space
    carry a perfect high-level policy to the goal? At each choice also the prior gap, E[log p_a(u | s)] -
    log p_a(z | s) in nats (bench/bench_skills.py `prior_gap`; a policy with its mean at z pays at least gap + |Z| / 2
    of KL): SPiRL's policy starts as the prior and keeps within about delta (the maze's: 1) of it, so a route whose
    skills lie far below the prior's own samples is one it can hardly take. Gaps by the cell's grid distance from
    the start, in bands of 10."""
    import torch

    from bench.bench_skills import prior_gap
    from envs.maze import cell_anchor
    from envs.maze_demos import REACHED, controller_action
    from spirl_pretrain import load_skill_model

    model, config = load_skill_model(checkpoint)
    if config.get("conditioned_decoder"):
        raise SystemExit(f"error: {checkpoint}: the route oracle does not encode s_1; bench another model")
    env = MazeEnv.downstream(image=config["image"], view=config.get("view", "camera"))
    walls, H, generator = env.walls, model.decoder.skill_horizon, torch.Generator().manual_seed(0)
    to_goal, from_start = distances_from(walls, DOWNSTREAM_GOAL), distances_from(walls, DOWNSTREAM_START)
    reached, closest, gaps = 0, [], {}
    for episode in range(episodes):
        observation, _ = env.reset(seed=episode)
        best, hit = int(to_goal[DOWNSTREAM_START]), False
        while env.steps < env.max_episode_steps and not hit:
            state, cell = observation[:4], xy_to_cell(walls, observation[:2])
            path = shortest_path(walls, cell, DOWNSTREAM_GOAL) or [cell]
            plan = [cell_anchor(walls, c) for c in path[1:]] or [cell_anchor(walls, cell)]
            saved = (env.steps, env.reached, getattr(env, "_previous_view", None), getattr(env, "_view", None))
            k, actions, previous, seen = 0, [], state[:2], [observation]
            for _ in range(H):  # the controller's next H actions, on the live env
                moved = np.linalg.norm(state[:2] - previous)
                if np.linalg.norm(state[:2] - plan[k]) < REACHED and moved < REACHED:
                    k = min(k + 1, len(plan) - 1)
                actions.append(controller_action(state, plan[k]).astype(np.float32))
                seen.append(env.step(actions[-1])[0])
                previous, state = state[:2], seen[-1][:4]
            observation = env.place(observation[:2], observation[2:4])  # put back
            env.steps, env.reached = saved[0], saved[1]
            if env.image:
                env._previous_view, env._view = saved[2], saved[3]
                observation = env._observation(observation[:4])
            with torch.no_grad():  # a closed-loop encoder also reads the observations the controller's steps passed
                window = torch.as_tensor(np.asarray(seen, dtype=np.float32))[None]
                z = model.encode(window, torch.as_tensor(np.asarray(actions))[None])[0][0]
            band = f"{10 * (int(from_start[cell]) // 10)}-{10 * (int(from_start[cell]) // 10) + 10}"
            gaps.setdefault(band, []).append(prior_gap(model, observation, z, generator))
            for observation, reward in run_skill(model, env, z[None], observation, env.max_episode_steps - env.steps):
                hit = hit or reward > 0
                now = xy_to_cell(walls, observation[:2])
                best = min(best, int(to_goal[now])) if to_goal[now] >= 0 else best
        reached += hit
        closest.append(best)
    order = sorted(gaps, key=lambda band: int(band.split("-")[0]))
    figures = {
        "episodes": episodes,
        "episodes_reaching_goal": reached,
        "closest_cells": closest,
        "prior_gap_median_by_cells_from_start": {band: float(np.median(gaps[band])) for band in order},
        "prior_gap_median": float(np.median(np.concatenate([gaps[b] for b in order]))),
    }
    print(f"route oracle: goal reached in {reached}/{episodes}, closest {closest}; prior gap (nats) by cells from")
    print(f"the start: {figures['prior_gap_median_by_cells_from_start']}")
    return figures


def junction_probes(checkpoint: str, episodes: int, skills: int = 20) -> dict:
    """Per JUNCTIONS case: the share of `episodes` in which skills sampled from the prior, from the agent placed
    there (MazeEnv.place), reach one of the case's cells within `skills` skills."""
    import torch

    from envs.maze import cell_anchor
    from spirl_pretrain import load_skill_model

    model, config = load_skill_model(checkpoint)
    env = MazeEnv.downstream(image=config["image"], view=config.get("view", "camera"))
    figures, rng = {}, np.random.default_rng(0)
    for what, cell, velocity, through in JUNCTIONS:
        passed = 0
        for episode in range(episodes):
            env.reset(seed=episode)
            state, hit = env.place(cell_anchor(env.walls, cell), velocity), False
            for _ in range(skills):
                observation = torch.as_tensor(state, dtype=torch.float32)[None]
                with torch.no_grad():
                    mu, log_sigma = model.skill_prior(observation)
                    z = mu + torch.exp(log_sigma) * torch.as_tensor(rng.standard_normal(mu.shape), dtype=torch.float32)
                for state, _ in run_skill(model, env, z, state, model.decoder.skill_horizon):
                    hit = hit or xy_to_cell(env.walls, state[:2]) in through
            passed += hit
        figures[f"{what} {cell}"] = {"through": passed, "episodes": episodes}
        print(f"junction, {what} {cell}: through in {passed}/{episodes}")
    return figures


def main():
    import tyro

    from envs.maze_demos import Args as DemoArgs
    from envs.maze_demos import collect_chunk

    args = tyro.cli(Args)
    if args.skills_only:
        figures = skill_exploration(args.skill_checkpoint, args.skill_episodes, args.skill_ways)
        if args.junction_probes > 0:
            figures["junctions"] = junction_probes(args.skill_checkpoint, args.junction_probes)
        if args.route_oracle > 0:
            figures["route_oracle"] = route_oracle(args.skill_checkpoint, args.route_oracle)
        if args.out != Args().out:
            with open(args.out, "w") as f:
                json.dump(figures, f, indent=2)
        return
    env = MazeEnv.downstream()
    farthest, at_goal = [], 0
    for seed in range(args.episodes):
        state, _ = env.reset(seed=seed)
        rng, start, far = np.random.default_rng(seed), state[:2].copy(), 0.0
        for _ in range(env.max_episode_steps):
            state, reward, *_ = env.step(rng.uniform(-1, 1, 2))
            far, at_goal = max(far, float(np.linalg.norm(state[:2] - start))), at_goal + int(reward > 0)
        farthest.append(far)
    episodes = collect_chunk(DemoArgs(out="unused"), 0, args.planner_episodes)
    figures = {
        "shortest_path_cells": len(shortest_path(downstream_layout(), DOWNSTREAM_START, DOWNSTREAM_GOAL)) - 1,
        "random_actions_farthest_cells": [round(f, 1) for f in farthest],
        "random_actions_steps_at_goal": at_goal,
        "planner": planner_figures(episodes),
        "renderer": "numpy (envs/maze.py render_views)",
        "train_env_steps_per_s": round(steps_per_second(MazeEnv())),
        "image_env_steps_per_s": round(steps_per_second(MazeEnv.downstream(image=True))),
        "camera_frames_per_s_batch_256": round(frames_per_second(episodes)),
    }
    if args.skill_episodes > 0:
        figures["skills_from_start"] = skill_exploration(args.skill_checkpoint, args.skill_episodes, args.skill_ways)
    if args.junction_probes > 0:
        figures["junctions"] = junction_probes(args.skill_checkpoint, args.junction_probes)
    if args.route_oracle > 0:
        figures["route_oracle"] = route_oracle(args.skill_checkpoint, args.route_oracle)
    print(json.dumps(figures, indent=2))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(figures, f, indent=2)
    if args.frames_out:
        draw_frame_pairs(episodes, args.frames_out)
        print(f"wrote {args.frames_out}")


if __name__ == "__main__":
    main()
