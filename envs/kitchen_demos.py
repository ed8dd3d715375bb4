"""Scripted kitchen demonstrations in the spirit of D4RL "mixed", written as a local Minari dataset.

    python -m envs.kitchen_demos                       # 600 episodes -> data/kitchen-scripted-v0
    python -m envs.kitchen_demos --episodes 50 --out /tmp/kitchen-small
    python -m envs.kitchen_demos --orders uniform      # the earlier data: 631 orders drawn uniformly

Each episode chains four subtasks, performed by the scripted controllers of envs/kitchen_scripted.py.
By default (--orders relay) its order is one of the 24 fixed sequences of the Relay Policy Learning demos
that D4RL mixed is made of (RELAY_SEQUENCES), each used equally often (25 episodes each of 600). None is
the paper's downstream sequence (microwave, kettle, bottom burner, light switch), but its steps are
common, and that bias is what makes a prior learned on D4RL mixed useful downstream (`chain_statistics`).
All 24 are performed as listed, none substituted: the five that open the slide cabinet right after the
hinge cabinet work since the slide controller skips its ready move when the hinge door is open
(kitchen_scripted.ready_move_blocked). --orders uniform draws each episode's order from every choice of 4
of the 7 subtasks except the downstream sequence and, as before, the orders that open the hinge cabinet
before the slide cabinet or the top burner (`task_orders`); a prior learned on it has no bias towards the
downstream chain.

An episode ends when its four subtasks are done (the env terminates) or at --max-episode-steps.
Observations are the paper's 30-dim state; actions are the 9-dim joint velocities the env executed
(noise included); each episode's env seed is stored, so env.reset(seed=...) gives its first state again.

Measured with bench/bench_kitchen_demos.py --attempts 0 --episodes 240 (relay orders, 10 episodes per
sequence; with the controllers before the microwave, kettle and bottom burner fixes of kitchen_scripted.py),
and the dataset itself (`python -m envs.kitchen_demos`, the current controllers: 600 episodes, 122,494
transitions, mean length 204, 4.3 min in one process on a shared CPU):

    action noise, episode limit   all 4 done  truncated  first microwave  mw -> kettle  kettle -> bb  bb -> light
    0.01, 280 steps                     0.87       0.10             0.61          0.46          0.31         0.51
    0.02, 280 steps                     0.84       0.11             0.61          0.46          0.32         0.51
    0.01, 320 steps                     0.90       0.03             0.61          0.46          0.31         0.50
    0.02, 320 steps                     0.89       0.04             0.61          0.46          0.32         0.49
    the dataset (0.01, 320 steps)       0.95       -                0.62          0.46          0.33         0.50
    D4RL mixed                          -          -               (0.62)        (0.47)        (0.33)       (0.47)

The chain figures do not move with the noise: the sequences set them, and a failed subtask only drops a
pair (bottom burner -> light switch comes out a little high because the knob's twist now and then flips
the light switch too). So the noise is 0.01, and the recorded actions stay smooth like a teleoperator's,
which a skill decoder can reproduce; the diversity comes from the waypoint jitter, each subtask's speed
and the episode's tempo. Most incomplete episodes ran out of time rather than into a failure (microwave,
kettle, hinge cabinet, slide cabinet takes about 250 steps on average), so the limit is 320 steps rather
than the downstream task's 280; the Relay demos were not cut at 280 either.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from envs.datasets import write_minari
from envs.errors import SpirlError
from envs.kitchen import ALL_SUBTASKS, DEFAULT_TASKS, KitchenEnv, subtasks_complete
from envs.kitchen_scripted import SubtaskController

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET_NAME = "kitchen-scripted-v0"
DEFAULT_DATASET_DIR = os.path.join(REPO_ROOT, "data", DATASET_NAME)
DOWNSTREAM_ORDER = tuple(DEFAULT_TASKS)
# The 24 four-subtask sequences of the Relay Policy Learning demos behind D4RL kitchen "mixed", one per
# folder of kitchen_demos_multitask/ (friday_* and postcorl_*; bottomknob = bottom burner, topknob = top
# burner, switch = light switch, slide = slide cabinet, hinge = hinge cabinet). Two folders share
# microwave_bottomknob_switch_slide, so it appears twice, as its episodes would in D4RL mixed.
_M, _K, _B, _T, _L, _S, _H = (
    "microwave",
    "kettle",
    "bottom burner",
    "top burner",
    "light switch",
    "slide cabinet",
    "hinge cabinet",
)
RELAY_SEQUENCES = (
    (_K, _B, _H, _S),
    (_K, _B, _L, _S),
    (_K, _L, _H, _S),
    (_K, _T, _B, _S),
    (_K, _T, _L, _S),
    (_M, _B, _H, _S),
    (_M, _B, _L, _S),
    (_M, _K, _B, _H),
    (_M, _K, _B, _S),
    (_M, _K, _H, _S),
    (_M, _K, _L, _S),
    (_M, _K, _T, _H),
    (_M, _K, _T, _L),
    (_M, _T, _B, _H),
    (_M, _T, _B, _S),
    (_T, _B, _L, _S),  # the 16 friday_* folders, then the 8 postcorl_* ones
    (_K, _B, _L, _H),
    (_K, _T, _B, _H),
    (_K, _T, _B, _L),
    (_M, _B, _L, _S),
    (_M, _K, _L, _H),
    (_M, _L, _H, _S),
    (_M, _T, _B, _L),
    (_M, _T, _L, _H),
)
# The downstream chain's consecutive pairs, whose frequencies in the data bias a learned prior towards
# the downstream task (see `chain_statistics`).
CHAIN_PAIRS = tuple(zip(DOWNSTREAM_ORDER[:-1], DOWNSTREAM_ORDER[1:]))


@dataclass
class Args:
    episodes: int = 600
    """number of episodes (D4RL mixed has about 600)"""
    out: str = DEFAULT_DATASET_DIR
    """Minari dataset directory to write (replaced atomically when complete)"""
    seed: int = 0
    """seed of task orders, controller noise and env noise; the same seed gives the same dataset"""
    orders: Literal["relay", "uniform"] = "relay"
    """relay: the 24 sequences of D4RL mixed's demos (RELAY_SEQUENCES), equally often; uniform: each
    episode's order drawn uniformly from 631 choices of 4 of the 7 subtasks (`task_orders`)"""
    max_episode_steps: int = 320
    """episode limit; longer than the downstream task's 280 so that slow sequences finish (module docstring)"""
    action_noise: float = 0.01
    """std of Gaussian noise added to every scripted action (before clipping)"""
    jitter: float = 0.01
    """std (metres) of the per-episode jitter of each waypoint"""
    tempo: float = 0.15
    """per-episode speed factor drawn from U(1 - tempo, 1 + tempo), times each subtask's own U(0.8, 1.2)"""
    overwrite: bool = False
    """replace an existing dataset at --out"""


def task_orders() -> list[tuple[str, ...]]:
    """Every ordered choice of 4 of the 7 subtasks except the downstream sequence and the orders that
    open the hinge cabinet before the slide cabinet or the top burner (631 orders).

    The open right hinge door stands in front of the slide cabinet's handle and beside the top knob, and
    blocks the arm's way to them: every failed scripted top burner we inspected came after the hinge
    cabinet. Leaving out the hinge-then-slide orders raised the episodes that complete all four subtasks
    from 64% to 68%, then the hinge-then-top-burner orders from 74% to 86% (100 episodes each). The
    downstream task contains none of the three, so this leaves its skills and their pairs untouched.
    """

    def allowed(order):
        after_hinge = order[order.index("hinge cabinet") :] if "hinge cabinet" in order else ()
        return order != DOWNSTREAM_ORDER and "slide cabinet" not in after_hinge and "top burner" not in after_hinge

    return [order for order in itertools.permutations(ALL_SUBTASKS, 4) if allowed(order)]


def episode_orders(args: Args) -> list[tuple[str, ...]]:
    """The four-subtask order of each of the `args.episodes` episodes.

    relay: every sequence of RELAY_SEQUENCES equally often (episodes // 24 or one more each; which ones get
    the extra is drawn), in a seeded shuffle, so that 600 episodes hold 25 of each, like D4RL mixed's ~600
    episodes from 24 folders. uniform: drawn independently from `task_orders()`.
    """
    rng = np.random.default_rng([args.seed, 1])
    if args.orders == "uniform":
        orders = task_orders()
        return [orders[i] for i in rng.integers(len(orders), size=args.episodes)]
    if args.orders != "relay":
        raise SpirlError(f"unknown --orders '{args.orders}': choose relay or uniform")
    rounds = -(-args.episodes // len(RELAY_SEQUENCES))
    picks = np.concatenate([rng.permutation(len(RELAY_SEQUENCES)) for _ in range(rounds)])[: args.episodes]
    return [RELAY_SEQUENCES[i] for i in rng.permutation(picks)]


def chain_statistics(orders: list[tuple[str, ...]]) -> dict:
    """How strongly the data leans towards the downstream chain, from each episode's completion order.

    first_microwave: share of episodes whose first completed subtask is the microwave; "A -> B": among the
    episodes where A was completed and another subtask was completed after it, the share where that next
    one was B. D4RL mixed (equal weight per Relay folder): 0.62, microwave -> kettle 0.47, kettle -> bottom
    burner 0.33, bottom burner -> light switch 0.47; uniformly random orders give about 0.17 for each.
    """
    stats = {"first_microwave": float(np.mean([bool(o) and o[0] == "microwave" for o in orders]))}
    for a, b in CHAIN_PAIRS:
        following = [o[o.index(a) + 1] for o in orders if a in o[:-1]]
        stats[f"{a} -> {b}"] = float(np.mean([n == b for n in following])) if following else float("nan")
    return stats


def completion_order(states: np.ndarray) -> tuple[str, ...]:
    """Subtasks in the order they first became complete along an episode's states (read off the data;
    a subtask already complete in the first state is not counted)."""
    complete = subtasks_complete(states, ALL_SUBTASKS)  # (T + 1, 7)
    first = {
        t: int(np.argmax(complete[:, i]))
        for i, t in enumerate(ALL_SUBTASKS)
        if complete[:, i].any() and not complete[0, i]
    }
    return tuple(sorted(first, key=first.get))


def collect_episode(env: KitchenEnv, order, rng: np.random.Generator, env_seed: int, args: Args) -> dict:
    """Run the four controllers of `order` back to back; stop when the env terminates or truncates."""
    env.set_tasks(order, ordered=True)
    state, _ = env.reset(seed=env_seed)
    states, actions, rewards = [state], [], []
    terminated = truncated = False
    tempo = rng.uniform(1.0 - args.tempo, 1.0 + args.tempo)  # one operator's pace for the whole episode
    for task in order:
        ctrl = SubtaskController(
            env, task, rng, jitter=args.jitter, action_noise=args.action_noise, speed_range=(0.8 * tempo, 1.2 * tempo)
        )
        while not ctrl.done and not (terminated or truncated):
            action = ctrl.act().astype(np.float32)
            state, reward, terminated, truncated, _ = env.step(action)
            states.append(state)
            actions.append(action)
            rewards.append(reward)
            if ctrl.complete and task == order[-1]:
                break  # the last subtask is done: nothing left to demonstrate
        if terminated or truncated:
            break
    return {
        "states": np.asarray(states, dtype=np.float32),
        "actions": np.asarray(actions, dtype=np.float32),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "terminated": terminated,
        "order": tuple(order),
        "completed": len(set(completion_order(np.asarray(states))) & set(order)),  # of this episode's four
        "seed": env_seed,  # env.reset(seed=...) gives the episode's first state again
    }


def collect(args: Args) -> dict:
    """Generate and write the dataset; returns the summary figures it prints."""
    from tqdm import tqdm

    if args.episodes < 1:
        raise SpirlError(f"--episodes must be at least 1 (got {args.episodes})")
    if os.path.exists(args.out) and not args.overwrite:
        raise SpirlError(f"{args.out} already exists: pass --overwrite to replace it, or choose another --out")
    orders = episode_orders(args)
    env = KitchenEnv(max_episode_steps=args.max_episode_steps)
    episodes, start = [], time.time()
    bar = tqdm(range(args.episodes), desc="kitchen demos", unit="ep")
    for i in bar:
        rng = np.random.default_rng([args.seed, i])
        episodes.append(collect_episode(env, orders[i], rng, args.seed * 1_000_003 + i, args))
        steps = sum(len(e["actions"]) for e in episodes)
        bar.set_postfix(
            all4=f"{np.mean([e['completed'] == 4 for e in episodes]):.0%}",
            steps_per_s=f"{steps / (time.time() - start):.0f}",
        )
    seconds = time.time() - start
    write_minari(
        args.out,
        episodes,
        f"spirl/{DATASET_NAME}",
        KitchenEnv(),
        args.seed,
        algorithm="scripted DLS-IK controllers (envs/kitchen_scripted.py)",
        description=f"Franka kitchen, 4 subtasks per episode ({args.orders} orders), never the downstream order "
        "microwave -> kettle -> bottom burner -> light switch. Observations: 30-dim state.",
    )
    lengths = np.array([len(e["actions"]) for e in episodes])
    summary = {
        "episodes": len(episodes),
        "transitions": int(lengths.sum()),
        "all_four_completed": float(np.mean([e["completed"] == 4 for e in episodes])),
        "mean_length": float(lengths.mean()),
        "max_length": int(lengths.max()),
        "seconds": seconds,
        "episodes_per_s": len(episodes) / seconds,
        "env_steps_per_s": float(lengths.sum() / seconds),
        **chain_statistics([completion_order(e["states"]) for e in episodes]),
    }
    print(
        f"wrote {args.out}: {summary['episodes']} episodes, {summary['transitions']} transitions, "
        f"{summary['all_four_completed']:.1%} complete all 4 subtasks, length mean {summary['mean_length']:.0f} "
        f"max {summary['max_length']}; {seconds:.0f} s ({summary['env_steps_per_s']:.0f} env steps/s)\n"
        + "downstream chain: "
        + ", ".join(f"{k} {v:.2f}" for k, v in summary.items() if "->" in k or "first" in k)
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
