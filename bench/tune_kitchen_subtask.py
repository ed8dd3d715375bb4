"""Tuning aid for the scripted kitchen controllers: success and steps per waypoint of one subtask.

    python bench/tune_kitchen_subtask.py "bottom burner" --attempts 16
    python bench/tune_kitchen_subtask.py "bottom burner" --plan "knob2_site knob_Joint_2 -0.9" \
        --kwargs "grasp=(0,-0.02,-0.035), lead=0.6, yaw=-0.3, pitch=0.2"
    python bench/tune_kitchen_subtask.py "bottom burner" --ready   # its READY_POSTURES entry

Attempts start from env.reset (the first subtask of an episode). `--plan/--kwargs` try an
`articulate(...)` variant without editing envs/kitchen_scripted.py.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import envs.kitchen_scripted as scripted  # noqa: E402
from envs.kitchen import KitchenEnv  # noqa: E402
from envs.kitchen_scripted import CLOSE, OPEN  # noqa: E402,F401  (names usable in --kwargs)


@dataclass
class Args:
    task: Annotated[str, tyro.conf.Positional]
    """subtask name, e.g. "bottom burner" """
    attempts: int = 16
    """tries, env seeds 0..attempts-1"""
    plan: str | None = None
    """'SITE JOINT GOAL' for an articulate() variant"""
    kwargs: str = ""
    """keyword arguments of that articulate() variant, as Python"""
    ready: bool = False
    """print the subtask's ready posture instead: the arm's joints when its Cartesian approach, run
    from env.reset without noise or ready move, reaches the pre-grasp pose (mean over env seeds 0-4)"""


def ready_posture(env: KitchenEnv, task: str) -> np.ndarray:
    postures = []
    for seed in range(5):
        env.reset(seed=seed)
        ctrl = scripted.SubtaskController(
            env, task, np.random.default_rng(seed), jitter=0.0, action_noise=0.0, ready=False
        )
        while ctrl.index < 1 and ctrl.steps < 120:  # waypoint 0 is the pre-grasp pose
            env.step(ctrl.act())
        postures.append(env.qpos[:7].copy())
    return np.mean(postures, axis=0)


def main():
    args = tyro.cli(Args)
    if args.plan:
        site, joint, goal = args.plan.split()
        kwargs = eval(f"dict({args.kwargs})")
        scripted.SUBTASK_PLANS[args.task] = lambda c: scripted.articulate(c, site, joint, float(goal), **kwargs)
    env = KitchenEnv(tasks=[args.task])
    if args.ready:
        print(f'"{args.task}": np.array({ready_posture(env, args.task).round(2).tolist()}),')
        return
    successes, per_waypoint = [], []
    for seed in range(args.attempts):
        env.reset(seed=seed)
        ctrl = scripted.SubtaskController(env, args.task, np.random.default_rng(seed))
        counts = np.zeros(len(ctrl.waypoints), dtype=int)
        for _ in range(200):
            if ctrl.done:
                break
            counts[min(ctrl.index, len(counts) - 1)] += 1
            env.step(ctrl.act())
        successes.append(ctrl.complete)
        per_waypoint.append(counts)
    mean = np.mean(per_waypoint, axis=0)
    print(
        f"{args.task}: {sum(successes)}/{args.attempts} succeeded; mean steps per waypoint {mean.round(1)} "
        f"(total {mean.sum():.0f}); failed seeds {[s for s, ok in enumerate(successes) if not ok]}"
    )


if __name__ == "__main__":
    main()
