"""Scripted kitchen demonstrations (issue 3): controllers in the real simulator, the collector, the dataset."""

import itertools

import numpy as np
import pytest

import envs.datasets as datasets
from envs import SpirlError
from envs.kitchen import ALL_SUBTASKS, KitchenEnv, subtasks_complete
from envs.kitchen_demos import DOWNSTREAM_ORDER, Args, collect, completion_order, task_orders
from envs.kitchen_scripted import SubtaskController


def run_controller(env, task, seed, limit=200):
    ctrl = SubtaskController(env, task, np.random.default_rng(seed))
    for _ in range(limit):
        if ctrl.done:
            break
        env.step(ctrl.act())
    return ctrl


@pytest.mark.parametrize("task", ["microwave", "kettle", "light switch"])
def test_a_scripted_controller_completes_its_subtask_in_the_real_env(task):
    env = KitchenEnv(tasks=[task])
    env.reset(seed=0)
    assert not subtasks_complete(env.qpos[:30], [task])[0]
    ctrl = run_controller(env, task, seed=0)
    assert ctrl.done and ctrl.complete
    others = [t for t in ALL_SUBTASKS if t != task]  # and it did only its own subtask
    assert not subtasks_complete(env.qpos[:30], others).any()


def test_actions_stay_in_the_action_space_and_the_simulator_is_only_read():
    env = KitchenEnv(tasks=["microwave"])
    env.reset(seed=1)
    ctrl = SubtaskController(env, "microwave", np.random.default_rng(1))
    for _ in range(30):
        qpos = env.qpos.copy()
        action = ctrl.act()
        assert action.shape == (9,) and np.all(np.abs(action) <= 1.0)
        assert np.array_equal(env.qpos, qpos)  # act() reads the state, never writes it
        env.step(action)


def test_the_orders_are_all_choices_of_four_but_the_downstream_sequence():
    orders = task_orders()
    # hinge before slide: 120 of the 840 choices; hinge before top burner: 120; before both: 32
    assert len(orders) == 7 * 6 * 5 * 4 - 1 - (120 + 120 - 32) == 631 and len(set(orders)) == 631
    for o in orders:  # the open hinge door blocks the slide cabinet and the top knob
        assert not ("hinge cabinet" in o and {"slide cabinet", "top burner"} & set(o[o.index("hinge cabinet"):]))
    assert DOWNSTREAM_ORDER == ("microwave", "kettle", "bottom burner", "light switch")
    assert DOWNSTREAM_ORDER not in orders
    for first, second in itertools.pairwise(DOWNSTREAM_ORDER):  # each of its pairs still appears
        assert any(o[i : i + 2] == (first, second) for o in orders for i in range(3))


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos") / "kitchen-small"
    summary = collect(Args(episodes=4, out=str(out), seed=3))
    return out, summary


def test_generated_dataset_loads_through_the_loader_and_never_has_the_downstream_order(small_dataset, monkeypatch):
    out, summary = small_dataset
    episodes = datasets.load_episodes(str(out), "kitchen")
    assert len(episodes) == summary["episodes"] == 4
    assert sum(len(e.actions) for e in episodes) == summary["transitions"]
    for episode in episodes:
        assert episode.states.shape == (len(episode.actions) + 1, 30) and episode.actions.shape[1] == 9
        assert len(episode.actions) <= 280
        assert np.abs(episode.actions).max() <= 1.0
        order = completion_order(episode.states)
        assert order[:4] != DOWNSTREAM_ORDER and len(order) >= 1  # every episode demonstrates something
    # the documented name resolves to the repo's data directory
    monkeypatch.setitem(datasets.LOCAL_DATASETS, "spirl/kitchen-scripted-v0", (str(out), "python -m envs.kitchen_demos"))
    assert len(datasets.load_episodes("spirl/kitchen-scripted-v0", "kitchen")) == 4


def test_the_collector_is_deterministic_for_a_seed(small_dataset, tmp_path):
    out, _ = small_dataset
    again = tmp_path / "again"
    collect(Args(episodes=2, out=str(again), seed=3))
    first, second = datasets.load_episodes(str(out), "kitchen")[:2], datasets.load_episodes(str(again), "kitchen")
    for a, b in zip(first, second):
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.states, b.states)


def test_missing_dataset_and_existing_output_are_one_line_errors(small_dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.LOCAL_DATASETS, "spirl/kitchen-scripted-v0", (str(tmp_path / "nothing"), "python -m envs.kitchen_demos"))
    with pytest.raises(SpirlError, match=r"not generated yet: run `python -m envs.kitchen_demos`"):
        datasets.load_episodes("spirl/kitchen-scripted-v0", "kitchen")
    out, _ = small_dataset
    with pytest.raises(SpirlError, match="--overwrite"):
        collect(Args(episodes=1, out=str(out)))


def test_completion_order_reads_the_order_off_the_states():
    states = np.zeros((5, 30))
    states[:, 22] = [0, 0, -0.75, -0.75, -0.75]  # microwave opens at step 2
    states[3:, 17:19] = [-0.69, -0.05]  # then the light switch
    states[:, 11:13] = [-0.88, -0.01]  # bottom burner already on at the start: not counted
    assert completion_order(states) == ("microwave", "light switch")
