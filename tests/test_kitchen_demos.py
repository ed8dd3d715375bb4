"""Scripted kitchen demonstrations: controllers in the real simulator, the collector, the dataset."""

import itertools

import numpy as np
import pytest

import envs.datasets as datasets
from envs import SpirlError
from envs.kitchen import ALL_SUBTASKS, KitchenEnv, subtasks_complete
from envs.kitchen_demos import (
    DOWNSTREAM_ORDER,
    RELAY_SEQUENCES,
    Args,
    chain_statistics,
    collect,
    completion_order,
    episode_orders,
    task_orders,
)
from envs.kitchen_scripted import SubtaskController, ready_move_blocked


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


@pytest.mark.parametrize("seed", [0, 1])
def test_the_controllers_chain_the_downstream_task_and_each_object_stays_in_place(seed):
    env = KitchenEnv()  # microwave, kettle, bottom burner, light switch
    env.reset(seed=seed)
    for task in DOWNSTREAM_ORDER:
        assert run_controller(env, task, seed=seed).complete, task
    assert subtasks_complete(env.qpos[:30], DOWNSTREAM_ORDER).all()  # e.g. the kettle not turned off its goal


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
        assert not ("hinge cabinet" in o and {"slide cabinet", "top burner"} & set(o[o.index("hinge cabinet") :]))
    assert DOWNSTREAM_ORDER == ("microwave", "kettle", "bottom burner", "light switch")
    assert DOWNSTREAM_ORDER not in orders
    for first, second in itertools.pairwise(DOWNSTREAM_ORDER):  # each of its pairs still appears
        assert any(o[i : i + 2] == (first, second) for o in orders for i in range(3))


def test_the_relay_sequences_are_d4rl_mixeds_24_with_its_bias_towards_the_downstream_chain():
    assert len(RELAY_SEQUENCES) == 24 and len(set(RELAY_SEQUENCES)) == 23  # two folders share one sequence
    assert all(len(set(s)) == 4 and set(s) <= set(ALL_SUBTASKS) for s in RELAY_SEQUENCES)
    assert DOWNSTREAM_ORDER not in RELAY_SEQUENCES
    stats = chain_statistics(list(RELAY_SEQUENCES))  # the figures of the reference notes on D4RL mixed
    assert stats["first_microwave"] == pytest.approx(15 / 24)
    assert stats["microwave -> kettle"] == pytest.approx(7 / 15)
    assert stats["kettle -> bottom burner"] == pytest.approx(5 / 15)
    assert stats["bottom burner -> light switch"] == pytest.approx(7 / 15)


@pytest.mark.parametrize("episodes", [10, 50, 600])
def test_relay_orders_use_every_sequence_equally_often(episodes):
    orders = episode_orders(Args(episodes=episodes))
    assert len(orders) == episodes and set(orders) <= set(RELAY_SEQUENCES)
    counts = [sum(o == s for o in orders) / RELAY_SEQUENCES.count(s) for s in set(RELAY_SEQUENCES)]
    assert max(counts) - min(counts) <= 1  # per folder: episodes // 24 or one more
    if episodes == 600:
        assert set(counts) == {25}
    assert episode_orders(Args(episodes=episodes)) == orders  # seeded
    assert episode_orders(Args(episodes=episodes, seed=1)) != orders


def test_uniform_orders_are_still_available():
    orders = episode_orders(Args(episodes=200, orders="uniform"))
    assert len(orders) == 200 and set(orders) <= set(task_orders()) and len(set(orders)) > 100


def test_chain_statistics_count_the_next_completed_subtask():
    orders = [
        ("microwave", "kettle"),
        ("microwave", "light switch", "kettle"),
        ("kettle", "bottom burner"),
        ("microwave",),
    ]
    stats = chain_statistics(orders)
    assert stats["first_microwave"] == 0.75
    assert stats["microwave -> kettle"] == 0.5  # the lone microwave has no next subtask: not counted
    assert stats["kettle -> bottom burner"] == 1.0
    assert np.isnan(stats["bottom burner -> light switch"])


def test_the_slide_cabinet_is_opened_right_after_the_hinge_cabinet():
    env = KitchenEnv(tasks=["hinge cabinet", "slide cabinet"])
    env.reset(seed=0)
    assert not ready_move_blocked(env, "slide cabinet")
    assert run_controller(env, "hinge cabinet", seed=0).complete
    assert ready_move_blocked(env, "slide cabinet") and not ready_move_blocked(env, "kettle")
    assert run_controller(env, "slide cabinet", seed=0).complete


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
        assert len(episode.actions) <= Args.max_episode_steps
        assert np.abs(episode.actions).max() <= 1.0
        order = completion_order(episode.states)
        assert order[:4] != DOWNSTREAM_ORDER and len(order) >= 1  # every episode demonstrates something
    env = KitchenEnv()  # the stored env seeds give the episodes' first states again
    assert all(np.array_equal(env.reset(seed=e.seed)[0], e.states[0]) for e in episodes)
    for episode, order in zip(episodes, episode_orders(Args(episodes=4, seed=3))):  # done in the drawn order
        done = [t for t in completion_order(episode.states) if t in order]
        assert done and done == [t for t in order if t in done]
    # the documented name resolves to the repo's data directory
    command = "python -m envs.kitchen_demos"
    monkeypatch.setitem(datasets.LOCAL_DATASETS, "spirl/kitchen-scripted-v0", (str(out), command))
    assert len(datasets.load_episodes("spirl/kitchen-scripted-v0", "kitchen")) == 4


def test_the_collector_is_deterministic_for_a_seed(small_dataset, tmp_path):
    out, _ = small_dataset
    again = tmp_path / "again"
    collect(Args(episodes=2, out=str(again), seed=3))
    first, second = datasets.load_episodes(str(out), "kitchen")[:2], datasets.load_episodes(str(again), "kitchen")
    for a, b in zip(first, second):
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.states, b.states)


def test_missing_dataset_and_existing_output_are_one_line_errors(small_dataset, tmp_path, monkeypatch):
    missing = (str(tmp_path / "nothing"), "python -m envs.kitchen_demos")
    monkeypatch.setitem(datasets.LOCAL_DATASETS, "spirl/kitchen-scripted-v0", missing)
    with pytest.raises(SpirlError, match=r"not generated yet: run `python -m envs.kitchen_demos`"):
        datasets.load_episodes("spirl/kitchen-scripted-v0", "kitchen")
    out, _ = small_dataset
    with pytest.raises(SpirlError, match="--overwrite"):
        collect(Args(episodes=1, out=str(out)))
    with pytest.raises(SpirlError, match="choose relay or uniform"):
        episode_orders(Args(orders="alphabetical"))


def test_completion_order_reads_the_order_off_the_states():
    states = np.zeros((5, 30))
    states[:, 22] = [0, 0, -0.75, -0.75, -0.75]  # microwave opens at step 2
    states[3:, 17:19] = [-0.69, -0.05]  # then the light switch
    states[:, 11:13] = [-0.88, -0.01]  # bottom burner already on at the start: not counted
    assert completion_order(states) == ("microwave", "light switch")
