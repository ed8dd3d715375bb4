"""Maze training data: a planner on the map plus a waypoint controller, as the authors' (kpertsch/d4rl
scripts/generate_randMaze2d_datasets.py and pointmaze/waypoint_controller.py).

    python -m envs.maze_demos --episodes 85000   # the paper's count -> data/maze-planner-v2 (one process per core)
    python -m envs.maze_demos --episodes 200 --out /tmp/maze-small --random-action-fraction 0.5

Every episode has a new random 20 x 20 layout, and start and goal cells uniform over its free cells
(envs/maze.py draw_training_task). The planner takes a shortest path on the grid (BFS) and puts a waypoint
on every cell of it, jittered by up to 0.2 in each axis; a PD controller steers the point mass through
them (gains 10 on the position error, -1 on the velocity) and moves on to the next waypoint only within
0.1 of the current one, so it brakes at most cells. An episode ends within 0.1 of the goal or after 500
actions; cut episodes are kept (about half of them: start and goal are often far apart), and as the
authors only episodes of more than 20 actions. The actions are the controller's, without noise.
`--random-action-fraction` replaces that fraction of actions by uniform random ones: sub-optimal data
(app. G). Episode i uses the generator seeded (seed, i, attempt) and env seed
(seed * 1000003 + i) * 16 + attempt (a new attempt replaces a too short episode), so the data does not
depend on --workers. Observations are the 4-dim state; actions the 2-dim ones executed. A stopped collection
(Ctrl-C, a killed session) keeps its finished chunks in <out>.partial/, and the same command continues from them.

Non-expert data (app. G, Fig. 12): `--bc-policy` lets a behavioural-cloning policy fit to the planner's data choose
the actions instead, in the same tasks and episodes (it sees the two stacked frames, as the authors' ImageBCMdl,
and executes tanh of a sample of its Gaussian, as baselines/bc_sac.py):

    python baselines/bc_sac.py --env maze --image True --total-env-steps 0 --run-name maze_bc   # fit pi_BC only
    python -m envs.maze_demos --bc-policy runs/maze_bc/policy.pt --out data/maze-bc-v2

Both report the wall collisions per episode (the paper: 0 for the expert data, about 2.5 for the BC policy's).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from envs.datasets import ChunkStore, worker_pool, write_minari
from envs.errors import SpirlError
from envs.maze import MazeEnv, cell_anchor, shortest_path
from envs.registry import LOCAL_DATASETS

DATASET_ID = "spirl/maze-planner-v2"  # v1: the layouts' walls drawn in another order
BC_DATASET_ID = "spirl/maze-bc-v2"  # --bc-policy's non-expert data
P_GAIN, D_GAIN = 10.0, -1.0  # the authors' waypoint controller
REACHED = 0.1  # cells: a waypoint (and the goal) counts as reached this close, moving less than this per step
WAYPOINT_JITTER = 0.2  # cells, each axis
MIN_ACTIONS = 20  # the authors keep episodes of more than this many actions
ATTEMPTS = 16  # env seeds per episode index: the next replaces a too short episode
CHUNK = 100  # episodes per chunk: what a worker collects at a time, and what a stopped collection keeps


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
    action_noise: float = 0.0
    """std of Gaussian noise added to the controller's actions (before clipping; the authors' data has none)"""
    overwrite: bool = False
    """replace an existing dataset at --out"""
    workers: int = 0
    """processes collecting episodes in parallel (0: one per CPU core); the data does not depend on it"""
    bc_policy: str | None = None
    """policy.pt of a baselines/bc_sac.py --env maze --image run: its policy chooses the actions instead of the
    planner (non-expert data, app. G)"""


def waypoints(walls: np.ndarray, path: list[tuple[int, int]], rng: np.random.Generator) -> list[np.ndarray]:
    """The authors' plan: every cell after the start, each at its anchor (envs/maze.py cell_anchor) less up to
    WAYPOINT_JITTER in their two axes (their waypoint - U(0, 1) * 0.2), i.e. towards the cell's centre; the goal
    cell last, at its anchor exactly."""
    jitter = WAYPOINT_JITTER * rng.uniform(size=(max(len(path) - 2, 0), 2)) * np.array([-1.0, 1.0])
    return [cell_anchor(walls, cell) + j for cell, j in zip(path[1:-1], jitter)] + [cell_anchor(walls, path[-1])]


def controller_action(state: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.clip(P_GAIN * (target - state[:2]) + D_GAIN * state[2:], -1.0, 1.0)


def load_bc_policy(path: str):
    """The policy (eval mode) in a baselines/bc_sac.py --env maze --image run's policy.pt; else a SpirlError."""
    import torch

    from baselines import bc_sac  # the BC policy's network (envs/ otherwise needs nothing from baselines/)

    fix = "pass runs/<run>/policy.pt of `python baselines/bc_sac.py --env maze --image True --total-env-steps 0`"
    if not os.path.isfile(path):
        raise SpirlError(f"--bc-policy {path} does not exist; {fix}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpirlError(f"cannot read --bc-policy {path} ({type(e).__name__}); {fix}") from None
    saved = saved if isinstance(saved, dict) else {}
    settings = saved.get("args", {})
    if saved.get("kind") != "bc_sac_policy" or settings.get("env") != "maze" or not settings.get("image"):
        raise SpirlError(f"--bc-policy {path} is not the policy of a baselines/bc_sac.py --env maze --image run; {fix}")
    policy = bc_sac.make_policy(bc_sac.Args(**settings)).eval()
    policy.load_state_dict(saved["policy"])
    return policy


def collect_episode(env: MazeEnv, rng: np.random.Generator, env_seed: int, args: Args, policy=None) -> dict:
    """One episode of the planner, or with `policy` (load_bc_policy) of that policy in the same task."""
    state, info = env.reset(seed=env_seed)
    observation, state = state, state[:4]  # a BC policy's env gives image observations; the data keeps the state
    plan = waypoints(env.walls, shortest_path(env.walls, info["start_cell"], info["goal_cell"]), rng)
    target = plan[-1]  # the controller aims at the goal cell's anchor, as the authors' (not at the jittered goal)
    states, actions, rewards, k, reached, previous = [state], [], [], 0, False, state[:2]
    collisions, touching = 0, False
    for _ in range(env.max_episode_steps):
        # The authors' rule: done within REACHED of the target while moving less than REACHED per step (at the
        # top speed of 5 the point mass moves 0.05 per step, so the position alone decides).
        moved = np.linalg.norm(state[:2] - previous)
        reached = bool(np.linalg.norm(state[:2] - target) < REACHED and moved < REACHED)
        waypoint = target if reached else plan[k]
        if policy is not None:
            action = bc_action(policy, observation, rng)
        elif rng.random() < args.random_action_fraction:
            action = rng.uniform(-1.0, 1.0, 2)
        else:
            action = np.clip(controller_action(state, waypoint) + rng.normal(0.0, args.action_noise, 2), -1.0, 1.0)
        if not reached and np.linalg.norm(state[:2] - waypoint) < REACHED and moved < REACHED:
            k = min(k + 1, len(plan) - 1)
        previous = state[:2]
        observation, reward, _, _, _ = env.step(action)  # the authors execute the action of the final step too
        state = observation[:4]
        now_touching = env.touching_wall()
        collisions += now_touching and not touching  # a new contact with a wall
        touching = now_touching
        states.append(state)
        actions.append(action.astype(np.float32))
        rewards.append(reward)
        if reached:
            break
    # The env seed is stored with the episode: MazeEnv().reset(seed=it) rebuilds its task (for images).
    return {
        "states": np.asarray(states, np.float32),
        "actions": np.asarray(actions, np.float32),
        "rewards": np.asarray(rewards, np.float32),
        "terminated": reached,
        "seed": env_seed,
        "collisions": collisions,
    }


def bc_action(policy, observation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """a = tanh(u), u ~ pi_BC(. | frames), as baselines/bc_sac.py executes its policy (noise from `rng`)."""
    import torch

    with torch.no_grad():
        mu, log_sigma = policy(torch.as_tensor(observation, dtype=torch.float32)[None])
    u = mu[0].numpy() + np.exp(log_sigma[0].numpy()) * rng.standard_normal(mu.shape[-1])
    return np.tanh(u).astype(np.float32)


def collect_chunk(args: Args, first: int, count: int) -> list[dict]:
    """Episodes first .. first + count - 1; each depends only on (seed, its index), not on the chunking."""
    policy = None
    if args.bc_policy:
        import torch

        torch.set_num_threads(1)  # one process per core
        policy = load_bc_policy(args.bc_policy)
    env, episodes = MazeEnv(image=policy is not None), []
    for i in range(first, first + count):
        for attempt in range(ATTEMPTS):
            rng = np.random.default_rng([args.seed, i, attempt])
            episode = collect_episode(env, rng, (args.seed * 1_000_003 + i) * ATTEMPTS + attempt, args, policy)
            if len(episode["actions"]) > MIN_ACTIONS:
                break
        else:
            raise SpirlError(f"episode {i}: {ATTEMPTS} attempts all ended within {MIN_ACTIONS} actions")
        episodes.append(episode)
    return episodes


def collect(args: Args) -> dict:
    from tqdm import tqdm

    if args.episodes < 1:
        raise SpirlError(f"--episodes must be at least 1 (got {args.episodes})")
    if not 0.0 <= args.random_action_fraction <= 1.0:
        raise SpirlError(f"--random-action-fraction must be in [0, 1] (got {args.random_action_fraction})")
    if os.path.exists(args.out) and not args.overwrite:
        raise SpirlError(f"{args.out} already exists: pass --overwrite to replace it, or choose another --out")
    if args.bc_policy:
        if args.out == LOCAL_DATASETS[DATASET_ID][0]:
            raise SpirlError("--bc-policy writes non-expert data: pass an --out other than the planner data's")
        load_bc_policy(args.bc_policy)  # a wrong file fails here, before any worker starts
    pool, _ = worker_pool(args.workers)
    counts = {first: min(CHUNK, args.episodes - first) for first in range(0, args.episodes, CHUNK)}  # in order
    # Finished chunks are kept on disk until the dataset is written: the same command continues a stopped collection.
    store = ChunkStore(args.out, {k: v for k, v in asdict(args).items() if k not in ("out", "overwrite", "workers")})
    if store.done:
        print(f"continuing from the {store.done} chunks of {CHUNK} episodes in {store.dir}")
    chunks = {first: store.load(first) for first in counts}
    todo = [first for first in counts if chunks[first] is None]
    episodes, steps, steps_now, reached, collisions, start = [], 0, 0, 0, 0, time.time()
    bar = tqdm(total=args.episodes, desc="maze demos", unit="ep", mininterval=1 if sys.stderr.isatty() else 30)
    try:
        with pool:
            collected = zip(todo, pool.map(collect_chunk, [args] * len(todo), todo, [counts[f] for f in todo]))
            for first in counts:
                if chunks[first] is None:
                    _, chunks[first] = next(collected)
                    store.save(first, chunks[first])
                    steps_now += sum(len(e["actions"]) for e in chunks[first])
                done = chunks.pop(first)
                episodes += done
                steps += sum(len(e["actions"]) for e in done)
                reached += sum(e["terminated"] for e in done)
                collisions += sum(e.pop("collisions") for e in done)
                bar.update(len(done))
                rate = steps_now / (time.time() - start)
                bar.set_postfix(reached=f"{reached / len(episodes):.0%}", steps_per_s=f"{rate:.0f}")
    except KeyboardInterrupt:
        bar.close()
        raise SpirlError(f"stopped; the finished chunks are kept in {store.dir}: the same command continues") from None
    bar.close()
    seconds = time.time() - start
    algorithm = "BFS planner, a jittered waypoint per cell, PD controller (envs/maze_demos.py)"
    algorithm = f"behavioural-cloning policy {args.bc_policy} (envs/maze_demos.py)" if args.bc_policy else algorithm
    description = (
        f"Point-mass maze, a new random 20x20 layout per episode; random action fraction "
        f"{args.random_action_fraction}. Observations: (x, y, vx, vy)."
    )
    dataset_id = BC_DATASET_ID if args.bc_policy else DATASET_ID
    write_minari(args.out, episodes, dataset_id, MazeEnv(), args.seed, algorithm=algorithm, description=description)
    store.remove()
    summary = {
        "episodes": len(episodes),
        "transitions": steps,
        "reached_goal": float(np.mean([e["terminated"] for e in episodes])),
        "wall_collisions_per_episode": collisions / len(episodes),
        "seconds": seconds,
        "env_steps_per_s": steps_now / seconds,
    }
    print(
        f"wrote {args.out}: {summary['episodes']} episodes, {steps} transitions, {summary['reached_goal']:.1%} reach "
        f"their goal, {summary['wall_collisions_per_episode']:.2f} wall collisions per episode; {seconds:.0f} s "
        f"({summary['env_steps_per_s']:.0f} env steps/s)"
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
