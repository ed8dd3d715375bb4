"""Franka kitchen as the paper used it (Sec. 4.1, app. C), on gymnasium-robotics' FrankaKitchen-v1.

What differs from `gym.make("FrankaKitchen-v1")`, and why:
- State: the paper's 30 dims, 9 robot joint positions then 21 object positions. FrankaKitchen-v1's
  59-dim `observation` is [robot qpos 9, robot qvel 9, object qpos 21, object qvel 20], so the state
  is observation[0:9] ++ observation[18:39], which is exactly D4RL kitchen's observations[:, 0:30]
  (D4RL appends a constant 30-dim goal). One state space for the env and every dataset format.
- Reward: +1 the first time a subtask of `tasks` is completed, counted only while every earlier
  subtask of the list is complete too. This is the ordered reward of the authors' D4RL fork (their
  KitchenBase.ENFORCE_TASK_ORDER), the environment behind the paper's numbers; gymnasium-robotics and
  upstream D4RL count any order, available here with `ordered=False`.
- Episodes terminate when every subtask has been counted; the 280-step limit is a truncation.
"""

from __future__ import annotations

import contextlib
import io

import gymnasium as gym
import numpy as np

with contextlib.redirect_stderr(io.StringIO()):  # silence an import-time notice about Adroit envs
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import KitchenEnv as _FrankaKitchenV1

from envs.errors import SpirlError

# Indices into the 30-dim state (= simulator qpos[0:30]) and goal values of each subtask; a subtask is
# complete when the L2 distance of its joints to the goal is below 0.3 (D4RL and FrankaKitchen-v1 agree).
SUBTASK_INDICES = {
    "bottom burner": np.array([11, 12]),
    "top burner": np.array([15, 16]),
    "light switch": np.array([17, 18]),
    "slide cabinet": np.array([19]),
    "hinge cabinet": np.array([20, 21]),
    "microwave": np.array([22]),
    "kettle": np.array([23, 24, 25, 26, 27, 28, 29]),
}
SUBTASK_GOALS = {
    "bottom burner": np.array([-0.88, -0.01]),
    "top burner": np.array([-0.92, -0.01]),
    "light switch": np.array([-0.69, -0.05]),
    "slide cabinet": np.array([0.37]),
    "hinge cabinet": np.array([0.0, 1.45]),
    "microwave": np.array([-0.75]),
    "kettle": np.array([-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06]),
}
COMPLETION_THRESHOLD = 0.3
ALL_SUBTASKS = tuple(SUBTASK_INDICES)
DEFAULT_TASKS = ("microwave", "kettle", "bottom burner", "light switch")  # the paper's downstream task
STATE_DIM = 30
ACTION_DIM = 9


def v1_observation_to_state(observation: np.ndarray) -> np.ndarray:
    """FrankaKitchen-v1 / Minari `observation` (..., 59) -> the paper's 30-dim state."""
    return np.concatenate([observation[..., 0:9], observation[..., 18:39]], axis=-1)


def d4rl_observation_to_state(observation: np.ndarray) -> np.ndarray:
    """D4RL kitchen observation (..., 60) = [qpos 30, goal 30] -> the paper's 30-dim state."""
    return observation[..., 0:30]


def subtasks_complete(state: np.ndarray, tasks) -> np.ndarray:
    """Boolean per task (last axis; `state` may be (30,) or (T, 30)): is its joint configuration
    within the threshold of its goal?"""
    return np.stack(
        [
            np.linalg.norm(state[..., SUBTASK_INDICES[t]] - SUBTASK_GOALS[t], axis=-1) < COMPLETION_THRESHOLD
            for t in tasks
        ],
        axis=-1,
    )


def check_tasks(tasks) -> tuple[str, ...]:
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in SUBTASK_INDICES]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise SpirlError(f"bad kitchen task list {list(tasks)}: give distinct names from {list(ALL_SUBTASKS)}")
    return tasks


class KitchenEnv(gym.Env):
    """FrankaKitchen-v1 with the paper's 30-dim state and the (by default ordered) subtask reward.

    info["subtasks_completed"] counts subtasks rewarded so far; info["completed_tasks"] names them.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        tasks=DEFAULT_TASKS,
        ordered: bool = True,
        max_episode_steps: int = 280,
        robot_noise_ratio: float = 0.01,
        object_noise_ratio: float = 0.0005,
    ):
        self.tasks = check_tasks(tasks)
        self.ordered = ordered
        self.max_episode_steps = max_episode_steps
        # All seven subtasks are passed so that FrankaKitchen-v1 never terminates or edits its task
        # list by itself; completion and reward are computed here, from the noise-free simulator qpos.
        self._sim = _FrankaKitchenV1(
            tasks_to_complete=list(ALL_SUBTASKS),
            terminate_on_tasks_completed=False,
            remove_task_when_completed=False,
            robot_noise_ratio=robot_noise_ratio,
            object_noise_ratio=object_noise_ratio,
        )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._counted = np.zeros(len(self.tasks), dtype=bool)
        self._t = 0

    def set_tasks(self, tasks, ordered: bool | None = None):
        """Change the rewarded subtask list (takes effect at the next reset); the simulator is reused."""
        self.tasks = check_tasks(tasks)
        self.ordered = self.ordered if ordered is None else ordered
        self._counted = np.zeros(len(self.tasks), dtype=bool)

    @property
    def qpos(self) -> np.ndarray:
        """The simulator's noise-free joint positions (first 30 = the noise-free state)."""
        return self._sim.data.qpos

    @property
    def completed_tasks(self) -> tuple[str, ...]:
        """The subtasks counted as completed this episode (they stay counted if the object moves away)."""
        return tuple(t for t, c in zip(self.tasks, self._counted) if c)

    def _info(self) -> dict:
        return {
            "subtasks_completed": int(self._counted.sum()),
            "completed_tasks": self.completed_tasks,
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, _ = self._sim.reset(seed=seed)
        self._counted[:] = False
        self._t = 0
        return v1_observation_to_state(obs["observation"]).astype(np.float32), self._info()

    def _newly_counted(self) -> np.ndarray:
        complete = subtasks_complete(self._sim.data.qpos[:STATE_DIM], self.tasks)
        if not self.ordered:
            return complete & ~self._counted
        # Ordered: walk the list; a subtask counts only if all earlier ones are counted or complete now
        # (the authors' fork removes counted subtasks from the list and keeps the prefix rule).
        prefix_ok = np.cumprod(self._counted | complete).astype(bool)
        return prefix_ok & complete & ~self._counted

    def step(self, action):
        obs, _, _, _, _ = self._sim.step(np.asarray(action, dtype=np.float64))
        self._t += 1
        new = self._newly_counted()
        self._counted |= new
        reward = float(new.sum())
        terminated = bool(self._counted.all())
        truncated = self._t >= self.max_episode_steps and not terminated
        state = v1_observation_to_state(obs["observation"]).astype(np.float32)
        return state, reward, terminated, truncated, self._info()

    def close(self):
        self._sim.close()
