"""The kitchen env (envs/kitchen.py, envs/registry.py): state space, the mapping to D4RL/FrankaKitchen-v1
observations, and the ordered subtask reward of the authors' D4RL fork.

Subtasks are brought to their goal by writing the simulator state directly (qpos of the subtask's joints
set to the goal, qvel zeroed, mj_forward), then one zero-action env step. `test_goal_configurations_survive_a_step`
checks the physics premise of that trick for every subtask: none springs back (all stay within ~0.01 of
the goal after several steps, well inside the 0.3 threshold), the free-body kettle included.
"""

import gymnasium as gym
import gymnasium_robotics
import mujoco
import numpy as np
import pytest

import envs
from envs import SpirlError
from envs.kitchen import (
    ALL_SUBTASKS,
    COMPLETION_THRESHOLD,
    DEFAULT_TASKS,
    SUBTASK_GOALS,
    SUBTASK_INDICES,
    d4rl_observation_to_state,
    v1_observation_to_state,
)

gym.register_envs(gymnasium_robotics)

ZERO = np.zeros(9, dtype=np.float32)
PAPER_TASKS = ("microwave", "kettle", "bottom burner", "light switch")


def quiet_env(**kwargs):
    """The kitchen env without observation noise, so that state == simulator qpos[:30] exactly."""
    return envs.make_env("kitchen", robot_noise_ratio=0.0, object_noise_ratio=0.0, **kwargs)


def put_at_goal(env, task):
    """Write the subtask's joints to their goal configuration (simulator state, not through actions)."""
    data = env._sim.data
    data.qpos[SUBTASK_INDICES[task]] = SUBTASK_GOALS[task]
    data.qvel[:] = 0.0
    mujoco.mj_forward(env._sim.model, data)


def put_at_start(env, task, start_qpos):
    data = env._sim.data
    data.qpos[SUBTASK_INDICES[task]] = start_qpos[SUBTASK_INDICES[task]]
    data.qvel[:] = 0.0
    mujoco.mj_forward(env._sim.model, data)


def goal_distance(env, task):
    return float(np.linalg.norm(env.qpos[SUBTASK_INDICES[task]] - SUBTASK_GOALS[task]))


class RewardLog:
    """Steps an env and checks, at every step, that info agrees with the rewards seen so far."""

    def __init__(self, env):
        self.env = env
        self.total = 0.0

    def step(self, action=ZERO):
        state, reward, terminated, truncated, info = self.env.step(action)
        self.total += reward
        assert info["subtasks_completed"] == self.total
        assert len(info["completed_tasks"]) == info["subtasks_completed"]
        # completed_tasks names tasks of the list, in list order
        assert list(info["completed_tasks"]) == [t for t in self.env.tasks if t in info["completed_tasks"]]
        return state, reward, terminated, truncated, info


# ----------------------------------------------------------------------------- registry / spaces


def test_make_env_kitchen_has_30_dim_float32_states_and_9_dim_actions():
    spec = envs.env_spec("kitchen")
    assert (spec["state_dim"], spec["action_dim"]) == (30, 9)
    env = envs.make_env("kitchen")
    try:
        assert env.observation_space.shape == (30,)
        assert env.action_space.shape == (9,)
        assert env.tasks == DEFAULT_TASKS == PAPER_TASKS
        assert env.max_episode_steps == spec["max_episode_steps"] == 280
        state, info = env.reset(seed=0)
        assert state.shape == (30,) and state.dtype == np.float32
        assert info == {"subtasks_completed": 0, "completed_tasks": ()}
        state, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert state.shape == (30,) and state.dtype == np.float32
        assert isinstance(reward, float) and reward == 0.0
        assert terminated is False and truncated is False
        # default env: observation noise as in FrankaKitchen-v1 (small, but not zero)
        diff = np.abs(state - env.qpos[:30])
        assert 0 < diff.max() < 0.05
    finally:
        env.close()


@pytest.mark.parametrize("call", [envs.make_env, envs.env_spec])
def test_unknown_env_name_names_the_valid_choices(call):
    with pytest.raises(SpirlError) as e:
        call("kitchn")
    msg = str(e.value)
    assert "kitchn" in msg and "kitchen" in msg.replace("kitchn", "")
    assert all(name in msg for name in envs.ENV_NAMES)
    assert "\n" not in msg


# ----------------------------------------------------------------------------- state mapping


def test_state_is_simulator_qpos_and_equals_v1_and_d4rl_mappings():
    env = quiet_env()
    raw = gym.make("FrankaKitchen-v1", robot_noise_ratio=0.0, object_noise_ratio=0.0, disable_env_checker=True)
    try:
        rng = np.random.default_rng(0)
        state, _ = env.reset(seed=0)
        raw_obs, _ = raw.reset(seed=0)
        goal30 = np.zeros(30)
        for task in PAPER_TASKS:  # D4RL's constant goal vector: goal values at the subtasks' indices
            goal30[SUBTASK_INDICES[task]] = SUBTASK_GOALS[task]
        for t in range(8):
            qpos30 = env.qpos[:30].copy()
            np.testing.assert_array_equal(state, qpos30.astype(np.float32))
            # the same simulator stepped with the same actions, through plain FrankaKitchen-v1
            assert raw_obs["observation"].shape == (59,)
            np.testing.assert_array_equal(state, v1_observation_to_state(raw_obs["observation"]).astype(np.float32))
            d4rl_obs = np.concatenate([qpos30, goal30])
            assert d4rl_obs.shape == (60,)
            np.testing.assert_array_equal(state, d4rl_observation_to_state(d4rl_obs).astype(np.float32))
            action = rng.uniform(-1, 1, 9).astype(np.float32)
            state, *_ = env.step(action)
            raw_obs, *_ = raw.step(action)
        assert np.abs(state[:9] - env.reset(seed=0)[0][:9]).max() > 0.05  # the arm really moved
    finally:
        env.close()
        raw.close()


def test_real_d4rl_episodes_start_at_the_env_reset_state(kitchen_complete_path):
    env = quiet_env()
    try:
        reset_state, _ = env.reset(seed=0)
    finally:
        env.close()
    episodes = envs.load_episodes(kitchen_complete_path, "kitchen")
    first = np.stack([e.states[0] for e in episodes])
    diff = np.abs(first - reset_state)
    # Same simulator and initial pose up to teleoperation noise. Measured: objects (dims 9..29) within
    # 0.017 in every episode, robot joints within 0.05..0.16 (per-episode max), 0.097 on average.
    assert diff[:, 9:].max() < 0.05
    assert diff[:, :9].max() < 0.25
    assert diff.max(axis=1).mean() < 0.12
    # and far from an unrelated state (e.g. the robot's zero pose), so the check can fail
    assert np.abs(first[:, :9]).max() > 1.0


# ----------------------------------------------------------------------------- reward semantics


def test_goal_configurations_survive_a_step():
    """Premise of the tests below: a subtask written to its goal stays complete under zero actions."""
    env = quiet_env(tasks=ALL_SUBTASKS, ordered=False)
    try:
        for task in ALL_SUBTASKS:
            env.reset(seed=0)
            assert goal_distance(env, task) > COMPLETION_THRESHOLD, task  # not complete at reset
            put_at_goal(env, task)
            for _ in range(5):
                env.step(ZERO)
                assert goal_distance(env, task) < 0.05, task
    finally:
        env.close()


def test_completed_subtask_is_rewarded_exactly_once():
    env = quiet_env(tasks=PAPER_TASKS)
    try:
        env.reset(seed=0)
        log = RewardLog(env)
        for _ in range(3):
            assert log.step()[1] == 0.0
        put_at_goal(env, "microwave")
        _, reward, terminated, truncated, info = log.step()
        assert reward == 1.0 and not terminated and not truncated
        assert info["completed_tasks"] == ("microwave",)
        for _ in range(5):  # stays complete, never rewarded again
            _, reward, terminated, _, info = log.step()
            assert reward == 0.0 and not terminated
            assert goal_distance(env, "microwave") < COMPLETION_THRESHOLD
        assert info["subtasks_completed"] == 1
    finally:
        env.close()


def test_out_of_order_subtask_gives_zero_then_counts_once_its_predecessors_are_done():
    env = quiet_env(tasks=PAPER_TASKS, ordered=True)
    try:
        env.reset(seed=0)
        log = RewardLog(env)
        put_at_goal(env, "light switch")  # last of the list, done first
        _, reward, _, _, info = log.step()
        assert reward == 0.0 and info["subtasks_completed"] == 0
        put_at_goal(env, "microwave")
        assert log.step()[1] == 1.0
        put_at_goal(env, "kettle")
        _, reward, terminated, _, info = log.step()
        assert reward == 1.0 and not terminated
        assert info["completed_tasks"] == ("microwave", "kettle")
        put_at_goal(env, "bottom burner")  # completes the prefix: bottom burner and light switch count now
        _, reward, terminated, truncated, info = log.step()
        assert reward == 2.0
        assert terminated is True and truncated is False
        assert info["completed_tasks"] == PAPER_TASKS and info["subtasks_completed"] == 4
        assert log.total == 4.0
    finally:
        env.close()


def test_early_subtask_that_is_undone_before_its_turn_does_not_count():
    env = quiet_env(tasks=PAPER_TASKS, ordered=True)
    try:
        start, _ = env.reset(seed=0)
        log = RewardLog(env)
        put_at_goal(env, "light switch")
        assert log.step()[1] == 0.0
        put_at_start(env, "light switch", start)  # switched off again
        assert goal_distance(env, "light switch") > COMPLETION_THRESHOLD
        for task in ("microwave", "kettle", "bottom burner"):
            put_at_goal(env, task)
            _, reward, terminated, _, info = log.step()
            assert reward == 1.0 and not terminated, task
        assert info["completed_tasks"] == ("microwave", "kettle", "bottom burner")
        put_at_goal(env, "light switch")  # now in order: counts
        _, reward, terminated, _, info = log.step()
        assert reward == 1.0 and terminated and info["subtasks_completed"] == 4
    finally:
        env.close()


def test_counted_subtask_undone_later_does_not_block_the_next_one():
    """As in the authors' fork (counted subtasks leave the list): only not-yet-counted predecessors matter."""
    env = quiet_env(tasks=PAPER_TASKS, ordered=True)
    try:
        start, _ = env.reset(seed=0)
        log = RewardLog(env)
        put_at_goal(env, "microwave")
        assert log.step()[1] == 1.0
        put_at_start(env, "microwave", start)  # door closed again: stays counted
        assert goal_distance(env, "microwave") > COMPLETION_THRESHOLD
        put_at_goal(env, "kettle")
        _, reward, _, _, info = log.step()
        assert reward == 1.0 and info["completed_tasks"] == ("microwave", "kettle")
    finally:
        env.close()


def test_unordered_reward_counts_any_order():
    env = quiet_env(tasks=PAPER_TASKS, ordered=False)
    try:
        env.reset(seed=0)
        log = RewardLog(env)
        put_at_goal(env, "light switch")
        _, reward, terminated, _, info = log.step()
        assert reward == 1.0 and not terminated
        assert info["completed_tasks"] == ("light switch",)
        assert log.step()[1] == 0.0  # still only once
        put_at_goal(env, "bottom burner")
        put_at_goal(env, "kettle")
        _, reward, terminated, _, info = log.step()
        assert reward == 2.0 and not terminated
        assert info["completed_tasks"] == ("kettle", "bottom burner", "light switch")
    finally:
        env.close()


def test_episode_terminates_when_every_task_is_counted():
    env = quiet_env(tasks=("slide cabinet", "hinge cabinet"), ordered=True)
    try:
        env.reset(seed=0)
        log = RewardLog(env)
        put_at_goal(env, "slide cabinet")
        _, reward, terminated, truncated, _ = log.step()
        assert (reward, terminated, truncated) == (1.0, False, False)
        put_at_goal(env, "hinge cabinet")
        _, reward, terminated, truncated, info = log.step()
        assert (reward, terminated, truncated) == (1.0, True, False)
        assert info["completed_tasks"] == ("slide cabinet", "hinge cabinet")
        # a new episode starts from scratch
        _, info = env.reset(seed=0)
        assert info == {"subtasks_completed": 0, "completed_tasks": ()}
        assert env.step(ZERO)[1:3] == (0.0, False)
    finally:
        env.close()


def test_time_limit_truncates_without_terminating():
    env = quiet_env(max_episode_steps=5)
    try:
        env.reset(seed=0)
        for t in range(1, 6):
            _, reward, terminated, truncated, _ = env.step(ZERO)
            assert terminated is False and reward == 0.0
            assert truncated is (t == 5), t
        env.reset(seed=0)  # the step counter restarts
        assert env.step(ZERO)[3] is False
    finally:
        env.close()


def test_completing_the_last_task_on_the_last_step_terminates_not_truncates():
    env = quiet_env(tasks=("microwave",), max_episode_steps=3)
    try:
        env.reset(seed=0)
        env.step(ZERO)
        env.step(ZERO)
        put_at_goal(env, "microwave")
        _, reward, terminated, truncated, _ = env.step(ZERO)
        assert (reward, terminated, truncated) == (1.0, True, False)
    finally:
        env.close()


@pytest.mark.parametrize(
    "tasks",
    [("microwave", "kettel"), ("microwave", "microwave"), (), ["toaster"]],
    ids=["unknown", "duplicate", "empty", "list"],
)
def test_bad_task_list_raises_spirl_error(tasks):
    with pytest.raises(SpirlError) as e:
        envs.make_env("kitchen", tasks=tasks)
    msg = str(e.value)
    assert "\n" not in msg
    assert all(t in msg for t in ALL_SUBTASKS)  # names the valid choices


@pytest.mark.parametrize("name", ["maze", "block_stacking"])
def test_one_evaluation_episode_is_enough_where_every_episode_starts_alike_and_steps_deterministically(name):
    """The registry's eval_episodes 1 for the maze and block stacking: whatever the reset seed, the same actions give
    the same observations (frames included), so K episodes of the policy mean would repeat one; the kitchen's differ."""
    trajectories = []
    for seed in (1, 2):
        env = envs.make_env(name, image=True)
        observation, _ = env.reset(seed=seed)
        actions = np.random.default_rng(0).uniform(-1, 1, (100, *env.action_space.shape)).astype(np.float32)
        trajectories.append(np.stack([observation] + [env.step(a)[0] for a in actions]))
        env.close()
    np.testing.assert_array_equal(*trajectories)
    assert envs.env_spec(name)["eval_episodes"] == 1
    kitchen = envs.make_env("kitchen")
    assert not np.array_equal(kitchen.reset(seed=1)[0], kitchen.reset(seed=2)[0])
    assert envs.env_spec("kitchen")["eval_episodes"] == 10
