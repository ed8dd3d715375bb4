"""Block-stacking training data: a scripted, noisy stacking policy in the 5-block scene, built as the authors' was.

    python -m envs.block_stacking_demos      # the paper's 37,000 episodes -> data/block-stacking-scripted-v0
    python -m envs.block_stacking_demos --episodes 200 --out /tmp/bs-small --random-episode-fraction 0.5

One tower per episode, as the authors' task generator (clvrai/spirl FixedSizeSingleTowerBlockTaskGenerator,
summarised in ../shared/reference/original-spirl.md): the training scene (envs/block_stacking.py) starts with a
base block carrying 0 to 2 blocks, the rest on the table; each of the episode's --stacks stacking steps (the
authors: 2) carries a table block onto the tower's current top. No pickup is ever from a tower and nothing else
is moved, so new blocks land at levels 1 to 4 with probabilities 1/6, 1/3, 1/3, 1/6. A step: open, up to the
carry height, across, down, close, up, across, down onto the tower, open, up. The carry height is fixed
(CARRY_Z, the authors': a held block clears a 5-block tower). The policy is closed-loop: it steers to the current
waypoint at up to full speed and moves on within 1 cm. Noise, as the authors had it, comes from pseudo-random
subgoals: one between every two waypoints of a move, at 20-80% of the way and up to 20% of the distance to the
side, kept above the blocks. An episode ends when its plan is done (each carried block resting on the tower, the
gripper open above it) or after 250 steps; only completed episodes are kept. `--random-episode-fraction` mixes
in that fraction of episodes of uniform random actions, 250 steps each, kept regardless (the sub-optimal data of
Table 1: 0, 0.5, 0.75). Episode i uses the generator seeded (seed, i) and env seed seed * 1000003 + i, so the
data does not depend on --workers. A stopped collection (Ctrl-C, a killed session) keeps its finished chunks in
<out>.partial/, and the same command continues from them.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from envs.block_stacking import (
    BLOCK_HALF,
    REST_Z,
    TABLE_TOP,
    TRAIN_HALF_LENGTH,
    BlockStackingEnv,
    supported_heights,
)
from envs.datasets import ChunkStore, worker_pool, write_minari
from envs.errors import SpirlError
from envs.registry import LOCAL_DATASETS

DATASET_ID = "spirl/block-stacking-scripted-v0"
REACHED = 0.01  # m: a waypoint counts as reached this close
STEP_GAIN = 1 / 0.05  # full speed (5 cm per step) until 5 cm from the waypoint, then proportional
# The grip point's height while carrying, the authors' (table + 0.32 + 0.2 m): a held block's bottom is 8 cm
# above a 5-block tower, the tallest these episodes build.
CARRY_Z = TABLE_TOP + 0.52
# Subgoals stay this far from the table's centre line: the palm (0.18 m wide) then clears the barriers. A subgoal
# beyond it could not be reached and stalled the episode until its step limit (9 of 100 episodes).
Y_LIMIT = TRAIN_HALF_LENGTH - 0.1
GRIP_STEPS = 3  # env steps to close or open the fingers
CHUNK = 100  # episode indices per chunk: what a worker collects at a time, and what a stopped collection keeps


@dataclass
class Args:
    episodes: int = 37_000
    """number of episodes to keep (the paper used 37,000)"""
    out: str = LOCAL_DATASETS[DATASET_ID][0]
    """Minari dataset directory to write (replaced atomically when complete)"""
    seed: int = 0
    """seed of scenes, plans and subgoals; the same seed gives the same dataset"""
    random_episode_fraction: float = 0.0
    """fraction of the episodes that are uniform random actions instead of the scripted policy
    (sub-optimal data, Table 1)"""
    stacks: int = 2
    """stacking steps per episode, each carrying a table block onto the tower (the authors: 2; 1 to 3, fewer when
    the scene runs out of table blocks)"""
    overwrite: bool = False
    """replace an existing dataset at --out"""
    workers: int = 0
    """processes collecting episodes in parallel (0: one per CPU core); the data does not depend on it"""


# ----------------------------------------------------------------------------- the scripted policy


def tower(block_yz: np.ndarray) -> list[int]:
    """The training scene's tower, bottom to top: the base block and the blocks stacked on it (the block with the
    most blocks above it; at reset with nothing stacked, any table block could be the base: the lowest index)."""
    same_column = np.abs(block_yz[:, None, 0] - block_yz[None, :, 0]) < BLOCK_HALF
    on_table = np.abs(block_yz[:, 1] - REST_Z) < BLOCK_HALF / 2
    heights = (same_column & ~on_table[None, :]).sum(1) * on_table  # blocks above each table block
    base = int(np.argmax(heights))
    column = np.flatnonzero(same_column[base])
    return [int(i) for i in column[np.argsort(block_yz[column, 1])]]


def with_subgoals(start: np.ndarray, waypoints: list, rng: np.random.Generator, floor: float) -> list:
    """Insert one pseudo-random subgoal before each waypoint: 20-80% of the way there, pushed sideways
    by up to 20% of the distance (the authors' noise), never below `floor` (clear of the blocks)."""
    out, here = [], start
    for target in waypoints:
        diff = target[:2] - here[:2]
        length = np.linalg.norm(diff)
        if length > 0.05:
            side = np.array([-diff[1], diff[0]]) / length
            sub = here[:2] + rng.uniform(0.2, 0.8) * diff + rng.uniform(-0.2, 0.2) * length * side
            sub[1] = max(sub[1], min(floor, max(here[1], target[1])))
            sub[0] = np.clip(sub[0], -Y_LIMIT, Y_LIMIT)
            out.append(np.array([*sub, target[2]]))
        out.append(target)
        here = target
    return out


def plan_stack(state: np.ndarray, source: int, target: int, rng: np.random.Generator) -> list:
    """Waypoints (y, z, grip) that move block `source` onto block `target` at the carry height CARRY_Z, with
    subgoals. A waypoint with a 4th entry holds still for that many steps (closing or opening the fingers)."""
    blocks = state[8:].reshape(-1, 3)[:, 1:]
    (ys, zs), (yt, zt) = blocks[source], blocks[target]
    here = np.array([state[1], state[2], 1.0])
    approach = [np.array([state[1], CARRY_Z, 1.0]), np.array([ys, CARRY_Z, 1.0]), np.array([ys, zs, 1.0])]
    put = zt + 2 * BLOCK_HALF + 0.003
    carry = [np.array([ys, CARRY_Z, 0.0]), np.array([yt, CARRY_Z, 0.0]), np.array([yt, put, 0.0])]
    floor = CARRY_Z - 0.02
    return [
        *with_subgoals(here, approach, rng, floor),
        np.array([ys, zs, 0.0, GRIP_STEPS]),
        *with_subgoals(approach[-1], carry, rng, floor),
        np.array([yt, put, 1.0, GRIP_STEPS]),
        np.array([yt, CARRY_Z, 1.0]),
    ]


def steer(state: np.ndarray, waypoint: np.ndarray) -> np.ndarray:
    """[dy, dz, grip] towards the waypoint: full speed, slowing within 5 cm."""
    move = np.clip(STEP_GAIN * (waypoint[:2] - state[1:3]), -1.0, 1.0)
    return np.array([*move, waypoint[2]], np.float32)


def stacked_on(block_yz: np.ndarray, top: int, bottom: int) -> bool:
    dy = abs(block_yz[top, 0] - block_yz[bottom, 0])
    dz = block_yz[top, 1] - block_yz[bottom, 1]
    return dy < BLOCK_HALF and abs(dz - 2 * BLOCK_HALF) < 0.01 and not np.isnan(supported_heights(block_yz)[top])


def scripted_episode(env: BlockStackingEnv, rng: np.random.Generator, env_seed: int, stacks: int) -> dict:
    """One episode of the scripted policy; "terminated" is True when its whole plan succeeded."""
    state, _ = env.reset(seed=env_seed)
    states, actions, rewards = [state], [], []
    column = tower(env.block_yz())
    table = [i for i in range(env.n_blocks) if i not in column]
    sources = [int(i) for i in rng.permutation(table)[:stacks]]  # table blocks, each carried onto the tower top
    plan, k, hold, done_stacks = [], 0, 0, 0
    while len(actions) < env.max_episode_steps:
        if k == len(plan):  # the current stacking step is over: check it, then plan the next one
            if plan:
                if not stacked_on(env.block_yz(), sources[done_stacks], column[-1]):
                    break  # a failed stacking step fails the episode
                column.append(sources[done_stacks])
                done_stacks += 1
            if done_stacks == len(sources):
                break
            plan, k, hold = plan_stack(state, sources[done_stacks], column[-1], rng), 0, 0
        waypoint = plan[k]
        action = steer(state, waypoint)
        state, reward, _, _, _ = env.step(action)
        states.append(state)
        actions.append(action)
        rewards.append(reward)
        if len(waypoint) == 4:  # grip in place for a few steps
            hold += 1
            if hold >= waypoint[3]:
                k, hold = k + 1, 0
        elif np.all(np.abs(state[1:3] - waypoint[:2]) < REACHED):
            k += 1
    return {
        "states": np.asarray(states, np.float32),
        "actions": np.asarray(actions, np.float32),
        "rewards": np.asarray(rewards, np.float32),
        "terminated": done_stacks == len(sources) and done_stacks > 0,
        "seed": env_seed,
        "stacks": done_stacks,
        "random": False,
    }


def random_episode(env: BlockStackingEnv, rng: np.random.Generator, env_seed: int) -> dict:
    """Uniform random actions for a whole episode (250 steps)."""
    state, _ = env.reset(seed=env_seed)
    states, actions, rewards = [state], [], []
    for _ in range(env.max_episode_steps):
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        state, reward, _, _, _ = env.step(action)
        states.append(state)
        actions.append(action)
        rewards.append(reward)
    return {
        "states": np.asarray(states, np.float32),
        "actions": np.asarray(actions, np.float32),
        "rewards": np.asarray(rewards, np.float32),
        "terminated": False,
        "seed": env_seed,
        "stacks": 0,
        "random": True,
    }


# ----------------------------------------------------------------------------- the collector


def collect_chunk(args: Args, first: int, count: int) -> tuple[list[dict], dict]:
    """Episode indices first .. first + count - 1: the kept episodes (failed scripted ones dropped)
    and counts. Index i is a random-action episode when its generator's first draw is below
    --random-episode-fraction; each depends only on (seed, i), not on the chunking."""
    env = BlockStackingEnv.training()
    kept, counts = [], {"scripted": 0, "failed": 0, "steps": 0}
    for i in range(first, first + count):
        rng = np.random.default_rng([args.seed, i])
        env_seed = args.seed * 1_000_003 + i
        if rng.random() < args.random_episode_fraction:
            episode = random_episode(env, rng, env_seed)
        else:
            episode = scripted_episode(env, rng, env_seed, args.stacks)
            counts["scripted"] += 1
            counts["failed"] += not episode["terminated"]
        counts["steps"] += len(episode["actions"])
        if episode["terminated"] or episode["random"]:
            kept.append(episode)
    return kept, counts


def collect(args: Args) -> dict:
    from tqdm import tqdm

    if args.episodes < 1 or not 1 <= args.stacks <= 3:
        raise SpirlError(f"--episodes must be at least 1 and --stacks 1 to 3 (got {args.episodes}, {args.stacks})")
    if not 0.0 <= args.random_episode_fraction <= 1.0:
        raise SpirlError(f"--random-episode-fraction must be in [0, 1] (got {args.random_episode_fraction})")
    if os.path.exists(args.out) and not args.overwrite:
        raise SpirlError(f"{args.out} already exists: pass --overwrite to replace it, or choose another --out")
    pool, workers = worker_pool(args.workers)
    chunk = min(CHUNK, args.episodes)
    # Finished chunks are kept on disk until the dataset is written: the same command continues a stopped collection.
    settings = dict(seed=args.seed, stacks=args.stacks, random_episode_fraction=args.random_episode_fraction)
    store = ChunkStore(args.out, dict(settings, chunk=chunk))
    if store.done:
        print(f"continuing from the {store.done} chunks of {chunk} episode indices in {store.dir}")
    episodes, totals, start, next_index = [], {"scripted": 0, "failed": 0, "steps": 0}, time.time(), 0
    steps_now = 0  # env steps simulated by this process, for its speed
    bar = tqdm(
        total=args.episodes, desc="block stacking demos", unit="ep", mininterval=1 if sys.stderr.isatty() else 30
    )
    try:
        with pool:
            while len(episodes) < args.episodes:  # chunks of indices, `workers` at a time, kept in index order
                firsts = [next_index + chunk * k for k in range(workers)]
                next_index += chunk * workers
                results = {first: store.load(first) for first in firsts}
                todo = [first for first in firsts if results[first] is None]
                for first, result in zip(todo, pool.map(collect_chunk, [args] * len(todo), todo, [chunk] * len(todo))):
                    store.save(first, result)
                    results[first] = result
                    steps_now += result[1]["steps"]
                for kept, counts in (results[first] for first in firsts):
                    totals = {k: totals[k] + counts[k] for k in totals}
                    kept = kept[: args.episodes - len(episodes)]
                    episodes += kept
                    bar.update(len(kept))
                success = 1 - totals["failed"] / max(totals["scripted"], 1)
                rate = steps_now / (time.time() - start)
                bar.set_postfix(scripted_success=f"{success:.0%}", steps_per_s=f"{rate:.0f}")
    except KeyboardInterrupt:
        bar.close()
        raise SpirlError(f"stopped; the finished chunks are kept in {store.dir}: the same command continues") from None
    bar.close()
    seconds = time.time() - start
    algorithm = "scripted stacking policy with random subgoals (envs/block_stacking_demos.py)"
    description = (
        f"Block stacking, 5 blocks, one tower, {args.stacks} stacking steps per episode; random-action "
        f"episode fraction {args.random_episode_fraction}. Observations: the 23-dim state."
    )
    env = BlockStackingEnv.training()
    write_minari(args.out, episodes, DATASET_ID, env, args.seed, algorithm=algorithm, description=description)
    store.remove()
    summary = {
        "episodes": len(episodes),
        "transitions": sum(len(e["actions"]) for e in episodes),
        "scripted_success": 1 - totals["failed"] / max(totals["scripted"], 1),
        "seconds": seconds,
        "env_steps_per_s": steps_now / seconds,
    }
    print(
        f"wrote {args.out}: {summary['episodes']} episodes, {summary['transitions']} transitions; the scripted "
        f"policy completed {summary['scripted_success']:.1%} of its episodes; {seconds:.0f} s "
        f"({summary['env_steps_per_s']:.0f} env steps/s, failed episodes included)"
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
