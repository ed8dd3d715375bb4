"""Maze training data: a planner on the map plus a waypoint controller, as in D4RL maze2d.

    python -m envs.maze_demos --episodes 85000   # the paper's count -> data/maze-planner-v0 (one process per core)
    python -m envs.maze_demos --episodes 200 --out /tmp/maze-small --random-action-fraction 0.5

Every episode has a new random 20 x 20 layout, start and goal (envs/maze.py). The planner takes the
shortest path on the grid (BFS), keeps its corner cells as waypoints, and a PD controller steers the
point mass through them (D4RL's maze2d gains: 10 on the position error, -1 on the velocity). An
episode ends at the goal (within GOAL_REACHED cells) or after 500 steps. `--random-action-fraction`
replaces that fraction of actions by uniform random ones: sub-optimal data (app. G). Episode i uses
the generator seeded (seed, i) and env seed seed * 1000003 + i, so the data does not depend on
--workers.
Observations are the 4-dim state; actions the 2-dim ones executed.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from envs.datasets import worker_pool, write_minari
from envs.errors import SpirlError
from envs.maze import MazeEnv, cell_to_xy, shortest_path
from envs.registry import LOCAL_DATASETS

DATASET_ID = "spirl/maze-planner-v0"
GOAL_REACHED = 0.5  # cells
P_GAIN, D_GAIN = 10.0, -1.0  # D4RL maze2d's waypoint controller
WAYPOINT_TOLERANCE = 0.5  # cells: switch to the next waypoint this close to the current one


@dataclass
class Args:
    episodes: int = 85_000
    """number of episodes (the paper used 85,000)"""
    out: str = LOCAL_DATASETS[DATASET_ID][0]
    """Minari dataset directory to write (replaced atomically when complete)"""
    seed: int = 0
    """seed of layouts, starts, goals and noise; the same seed gives the same dataset"""
    random_action_fraction: float = 0.0
    """fraction of steps whose action is uniform random instead of the controller's (sub-optimal data, app. G)"""
    action_noise: float = 0.1
    """std of Gaussian noise added to the controller's actions (before clipping)"""
    overwrite: bool = False
    """replace an existing dataset at --out"""
    workers: int = 0
    """processes collecting episodes in parallel (0: one per CPU core); the data does not depend on it"""


def corner_waypoints(walls: np.ndarray, path: list[tuple[int, int]]) -> list[np.ndarray]:
    """Centres of the cells where the path turns, then the goal cell's centre."""
    triples = zip(path, path[1:], path[2:])
    corners = [b for a, b, c in triples if (b[0] - a[0], b[1] - a[1]) != (c[0] - b[0], c[1] - b[1])]
    return [cell_to_xy(walls, cell) for cell in corners + [path[-1]]]


def controller_action(state: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.clip(P_GAIN * (target - state[:2]) + D_GAIN * state[2:], -1.0, 1.0)


def collect_episode(env: MazeEnv, rng: np.random.Generator, env_seed: int, args: Args) -> dict:
    state, info = env.reset(seed=env_seed)
    waypoints = corner_waypoints(env.walls, shortest_path(env.walls, info["start_cell"], info["goal_cell"]))
    waypoints[-1] = env.goal  # the exact goal (PointMaze jitters it inside its cell)
    states, actions, rewards, k, reached = [state], [], [], 0, False
    for _ in range(env.max_episode_steps):
        while k < len(waypoints) - 1 and np.linalg.norm(waypoints[k] - state[:2]) < WAYPOINT_TOLERANCE:
            k += 1
        if rng.random() < args.random_action_fraction:
            action = rng.uniform(-1.0, 1.0, 2)
        else:
            action = np.clip(controller_action(state, waypoints[k]) + rng.normal(0.0, args.action_noise, 2), -1.0, 1.0)
        state, reward, _, _, _ = env.step(action)
        states.append(state)
        actions.append(action.astype(np.float32))
        rewards.append(reward)
        if np.linalg.norm(state[:2] - env.goal) < GOAL_REACHED:
            reached = True
            break
    # The env seed is stored with the episode: MazeEnv().reset(seed=it) rebuilds its layout (for images).
    return {
        "states": np.asarray(states, np.float32),
        "actions": np.asarray(actions, np.float32),
        "rewards": np.asarray(rewards, np.float32),
        "terminated": reached,
        "seed": env_seed,
    }


def collect_chunk(args: Args, first: int, count: int) -> list[dict]:
    """Episodes first .. first + count - 1; each depends only on (seed, its index), not on the chunking."""
    env = MazeEnv()
    return [
        collect_episode(env, np.random.default_rng([args.seed, i]), args.seed * 1_000_003 + i, args)
        for i in range(first, first + count)
    ]


def collect(args: Args) -> dict:
    from tqdm import tqdm

    if args.episodes < 1:
        raise SpirlError(f"--episodes must be at least 1 (got {args.episodes})")
    if not 0.0 <= args.random_action_fraction <= 1.0:
        raise SpirlError(f"--random-action-fraction must be in [0, 1] (got {args.random_action_fraction})")
    if os.path.exists(args.out) and not args.overwrite:
        raise SpirlError(f"{args.out} already exists: pass --overwrite to replace it, or choose another --out")
    pool, _ = worker_pool(args.workers)
    firsts = range(0, args.episodes, 100)  # chunks of 100 episodes, collected in order
    counts = [min(100, args.episodes - i) for i in firsts]
    episodes, steps, reached, start = [], 0, 0, time.time()
    bar = tqdm(total=args.episodes, desc="maze demos", unit="ep", mininterval=1 if sys.stderr.isatty() else 30)
    with pool:
        for done in pool.map(collect_chunk, [args] * len(counts), firsts, counts):
            episodes += done
            steps += sum(len(e["actions"]) for e in done)
            reached += sum(e["terminated"] for e in done)
            bar.update(len(done))
            rate = steps / (time.time() - start)
            bar.set_postfix(reached=f"{reached / len(episodes):.0%}", steps_per_s=f"{rate:.0f}")
    bar.close()
    seconds = time.time() - start
    algorithm = "BFS planner + PD waypoint controller (envs/maze_demos.py)"
    description = (
        f"Point-mass maze, a new random 20x20 layout per episode; random action fraction "
        f"{args.random_action_fraction}. Observations: (x, y, vx, vy)."
    )
    write_minari(args.out, episodes, DATASET_ID, MazeEnv(), args.seed, algorithm=algorithm, description=description)
    summary = {
        "episodes": len(episodes),
        "transitions": steps,
        "reached_goal": float(np.mean([e["terminated"] for e in episodes])),
        "seconds": seconds,
        "env_steps_per_s": steps / seconds,
    }
    print(
        f"wrote {args.out}: {summary['episodes']} episodes, {steps} transitions, {summary['reached_goal']:.1%} reach "
        f"their goal; {seconds:.0f} s ({summary['env_steps_per_s']:.0f} env steps/s)"
    )
    return summary


def main(argv: list[str] | None = None):
    import tyro

    args = tyro.cli(Args, args=argv)
    try:
        collect(args)
    except SpirlError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
