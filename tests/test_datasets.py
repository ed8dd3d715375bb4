"""Offline data (envs/datasets.py): Minari and D4RL readers, H-step windows, the train/val split, and the
one-line SpirlError for every bad input.

Datasets are written inside the tests from short real rollouts of the kitchen simulator. Minari datasets are
written with `minari.create_dataset_from_buffers` (minari's `DataCollector` needs jax, i.e.
`pip install "minari[create]"`, which this project does not depend on); the files are the same hdf5
Minari format that `DataCollector.create_dataset` writes.
"""

import socket
import warnings

import gymnasium as gym
import gymnasium_robotics
import h5py
import numpy as np
import pytest
import torch

import envs
from envs import Episode, SpirlError, WindowSampler, load_episodes, split_episodes
from envs.kitchen import DEFAULT_TASKS, SUBTASK_GOALS, SUBTASK_INDICES, v1_observation_to_state

gym.register_envs(gymnasium_robotics)

TINY_ID = "test/kitchen/tiny-v0"


def _stack(items):
    """List of (possibly nested dict) observations -> the same structure of stacked arrays."""
    if isinstance(items[0], dict):
        return {k: _stack([x[k] for x in items]) for k in items[0]}
    return np.stack(items)


def _minari_buffer(observations, actions, terminated_at_end):
    from minari.data_collector.episode_buffer import EpisodeBuffer

    n = len(actions)
    return EpisodeBuffer(
        observations=_stack(observations),
        actions=np.stack(actions),
        rewards=[0.0] * n,
        terminations=[False] * (n - 1) + [terminated_at_end],
        truncations=[False] * (n - 1) + [not terminated_at_end],
    )


def _write_minari(dataset_id, buffers, env):
    import minari

    with warnings.catch_warnings():  # minari nags about missing author/permalink/... metadata
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(dataset_id, buffers, env=env)


# ----------------------------------------------------------------------------- real rollouts (module-wide)


@pytest.fixture(scope="module")
def v1_rollouts():
    """3 episodes (20, 31, 15 steps) of random actions in plain FrankaKitchen-v1: (observations, actions)."""
    env = gym.make("FrankaKitchen-v1", max_episode_steps=40, disable_env_checker=True)
    rng = np.random.default_rng(0)
    episodes = []
    try:
        for ep, steps in enumerate((20, 31, 15)):
            obs, _ = env.reset(seed=ep)
            observations, actions = [obs], []
            for _ in range(steps):
                action = rng.uniform(-1, 1, 9).astype(np.float32)
                obs, *_ = env.step(action)
                observations.append(obs)
                actions.append(action)
            episodes.append((observations, actions))
    finally:
        env.close()
    return episodes


@pytest.fixture(scope="module")
def kitchen_rollouts():
    """3 episodes (20, 25, 15 steps) of random actions in envs' 30-dim kitchen env, noise-free:
    (states (T+1, 30), actions (T, 9), qpos (T+1, 30) read from the simulator)."""
    env = envs.make_env("kitchen", robot_noise_ratio=0.0, object_noise_ratio=0.0)
    rng = np.random.default_rng(1)
    episodes = []
    try:
        for ep, steps in enumerate((20, 25, 15)):
            state, _ = env.reset(seed=ep)
            states, actions, qpos = [state], [], [env.qpos[:30].copy()]
            for _ in range(steps):
                action = rng.uniform(-1, 1, 9).astype(np.float32)
                state, *_ = env.step(action)
                states.append(state)
                actions.append(action)
                qpos.append(env.qpos[:30].copy())
            episodes.append((np.stack(states), np.stack(actions), np.stack(qpos)))
    finally:
        env.close()
    return episodes


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def d4rl_arrays(kitchen_rollouts, ends=("timeout", "terminal", None)):
    """D4RL layout from the rollouts: per step t, observation [qpos30_t, goal30] and action a_t; the
    episode's last step is flagged `ends[i]` (None: the final, unflagged episode of a file)."""
    goal30 = np.zeros(30)
    for task in DEFAULT_TASKS:
        goal30[SUBTASK_INDICES[task]] = SUBTASK_GOALS[task]
    obs, act, term, tout = [], [], [], []
    for (states, actions, qpos), end in zip(kitchen_rollouts, ends):
        T = len(actions)  # D4RL keeps T (observation, action) pairs; the final next-state is not stored
        obs.append(np.concatenate([qpos[:T], np.tile(goal30, (T, 1))], axis=1))
        act.append(actions)
        flags = np.zeros(T, bool), np.zeros(T, bool)
        if end == "terminal":
            flags[0][-1] = True
        elif end == "timeout":
            flags[1][-1] = True
        term.append(flags[0])
        tout.append(flags[1])
    return dict(
        observations=np.concatenate(obs).astype(np.float32),
        actions=np.concatenate(act).astype(np.float32),
        rewards=np.zeros(sum(len(a) for a in act), np.float32),
        terminals=np.concatenate(term),
        timeouts=np.concatenate(tout),
    )


def write_hdf5(path, arrays, compression="gzip"):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value, compression=compression)
    return str(path)


def spirl_error(excinfo):
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


# ----------------------------------------------------------------------------- Minari


def test_minari_dataset_from_frankakitchen_v1_loads_by_folder_and_by_id(v1_rollouts, minari_root):
    env = gym.make("FrankaKitchen-v1", max_episode_steps=40, disable_env_checker=True)
    try:
        _write_minari(TINY_ID, [_minari_buffer(o, a, terminated_at_end=False) for o, a in v1_rollouts], env)
    finally:
        env.close()
    folder = minari_root / "test" / "kitchen" / "tiny-v0"
    assert (folder / "data").is_dir()
    for source in (str(folder), str(folder / "data"), TINY_ID):
        episodes = load_episodes(source, "kitchen")
        assert len(episodes) == len(v1_rollouts), source
        for ep, (observations, actions) in zip(episodes, v1_rollouts):
            raw = np.stack([o["observation"] for o in observations])
            assert raw.shape[1] == 59
            assert ep.states.shape == (len(observations), 30) and ep.states.dtype == np.float32
            assert ep.actions.shape == (len(actions), 9) and ep.actions.dtype == np.float32
            assert len(ep.states) == len(ep.actions) + 1
            np.testing.assert_allclose(ep.states, v1_observation_to_state(raw), rtol=0, atol=1e-6)
            np.testing.assert_array_equal(ep.actions, np.stack(actions))


def test_minari_dataset_from_the_30_dim_env_loads(kitchen_rollouts, minari_root):
    env = envs.make_env("kitchen")
    try:
        buffers = [_minari_buffer(list(s), list(a), terminated_at_end=False) for s, a, _ in kitchen_rollouts]
        _write_minari("test/kitchen30/tiny-v0", buffers, env)
    finally:
        env.close()
    episodes = load_episodes(str(minari_root / "test" / "kitchen30" / "tiny-v0"), "kitchen")
    assert [len(e.states) for e in episodes] == [len(s) for s, _, _ in kitchen_rollouts]
    for ep, (states, actions, _) in zip(episodes, kitchen_rollouts):
        np.testing.assert_array_equal(ep.states, states)
        np.testing.assert_array_equal(ep.actions, actions)


def test_minari_dataset_of_another_env_is_rejected(minari_root):
    """A Minari dataset whose observations don't fit the kitchen (CartPole: 4 dims)."""
    env = gym.make("CartPole-v1", disable_env_checker=True)
    try:
        obs, _ = env.reset(seed=0)
        observations, actions = [obs], []
        for _ in range(5):
            obs, *_ = env.step(1)
            observations.append(obs)
            actions.append(1)
        from minari.data_collector.episode_buffer import EpisodeBuffer

        buf = EpisodeBuffer(
            observations=np.stack(observations),
            actions=np.array(actions),
            rewards=[1.0] * 5,
            terminations=[False] * 5,
            truncations=[False] * 4 + [True],
        )
        _write_minari("test/cartpole/tiny-v0", [buf], env)
    finally:
        env.close()
    with pytest.raises(SpirlError) as e:
        load_episodes("test/cartpole/tiny-v0", "kitchen")
    msg = spirl_error(e)
    assert "(4,)" in msg and "kitchen" in msg and "use a dataset recorded in that env" in msg


def test_folder_without_minari_data_is_rejected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpirlError) as e:
        load_episodes(str(tmp_path / "empty"), "kitchen")
    assert "not a Minari dataset directory" in spirl_error(e)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails at once (and Hugging Face Hub is told it is offline)."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        import huggingface_hub.constants as hf_constants

        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    except ImportError:  # not installed here: minari fails before any connection (see the test below)
        pass
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_minari_id_neither_local_nor_downloadable(minari_root, no_network):
    """Not in MINARI_DATASETS_PATH; the download fails (without huggingface_hub minari raises ImportError
    before any connection; with it, HF_HUB_OFFLINE / the blocked sockets make it fail fast)."""
    with pytest.raises(SpirlError) as e:
        load_episodes("nonexistent/kitchen/none-v0", "kitchen")
    msg = spirl_error(e)
    assert "nonexistent/kitchen/none-v0" in msg
    assert 'pip install "minari[hf]"' in msg
    assert "internet" in msg
    assert "--dataset" in msg and "local" in msg


# ----------------------------------------------------------------------------- D4RL hdf5


def test_d4rl_hdf5_from_real_rollouts(kitchen_rollouts, tmp_path):
    arrays = d4rl_arrays(kitchen_rollouts)  # timeout, terminal, unflagged final episode
    path = write_hdf5(tmp_path / "tiny.hdf5", arrays)
    episodes = load_episodes(path, "kitchen")
    assert len(episodes) == 3
    start = 0
    for ep, (states, actions, qpos) in zip(episodes, kitchen_rollouts):
        T = len(actions)
        assert ep.states.shape == (T, 30) and ep.actions.shape == (T - 1, 9)
        assert ep.states.dtype == np.float32 and ep.actions.dtype == np.float32
        np.testing.assert_array_equal(ep.states, arrays["observations"][start : start + T, :30])
        np.testing.assert_array_equal(ep.actions, arrays["actions"][start : start + T - 1])
        # and that is the env's own state sequence (noise-free env: state == qpos)
        np.testing.assert_allclose(ep.states, states[:T], rtol=0, atol=1e-6)
        start += T


def test_d4rl_hdf5_without_timeouts_key_and_with_a_final_flag(kitchen_rollouts, tmp_path):
    arrays = d4rl_arrays(kitchen_rollouts, ends=("terminal", "terminal", "terminal"))
    del arrays["timeouts"]
    episodes = load_episodes(write_hdf5(tmp_path / "t.h5", arrays, compression=None), "kitchen")
    assert [len(e.states) for e in episodes] == [len(a) for _, a, _ in kitchen_rollouts]


def test_real_d4rl_kitchen_complete(kitchen_complete_path):
    episodes = load_episodes(kitchen_complete_path, "kitchen")
    assert len(episodes) == 19
    assert sum(len(e.states) for e in episodes) == 3680
    with h5py.File(kitchen_complete_path, "r") as f:
        observations, actions, terminals = f["observations"][:], f["actions"][:], f["terminals"][:]
    assert terminals.sum() == 19
    start = 0
    for e in episodes:
        T = len(e.states)
        assert e.states.shape == (T, 30) and e.actions.shape == (T - 1, 9)
        assert 182 <= T <= 207
        assert terminals[start + T - 1] and not terminals[start : start + T - 1].any()
        np.testing.assert_array_equal(e.states, observations[start : start + T, :30])
        np.testing.assert_array_equal(e.actions, actions[start : start + T - 1])
        start += T
    assert start == len(observations)


# ----------------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path):
    for source in (str(tmp_path / "missing.hdf5"), str(tmp_path / "missing_dir"), "./nope"):
        with pytest.raises(SpirlError) as e:
            load_episodes(source, "kitchen")
        msg = spirl_error(e)
        assert "does not exist" in msg and "--dataset" in msg, source


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.hdf5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(SpirlError) as e:
        load_episodes(str(path), "kitchen")
    msg = spirl_error(e)
    assert "corrupt" in msg and "download it again" in msg


def test_truncated_file(kitchen_rollouts, tmp_path):
    path = write_hdf5(tmp_path / "full.hdf5", d4rl_arrays(kitchen_rollouts))
    assert len(load_episodes(path, "kitchen")) == 3  # the intact file is fine
    data = open(path, "rb").read()
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SpirlError) as e:
        load_episodes(str(cut), "kitchen")
    msg = spirl_error(e)
    assert "truncated" in msg and "download it again" in msg


def test_hdf5_without_d4rl_keys(tmp_path):
    path = write_hdf5(tmp_path / "other.hdf5", {"images": np.zeros((4, 3)), "labels": np.zeros(4)})
    with pytest.raises(SpirlError) as e:
        load_episodes(path, "kitchen")
    msg = spirl_error(e)
    assert "not a D4RL dataset" in msg and "observations" in msg and "actions" in msg


@pytest.mark.parametrize("what", ["observations", "actions"])
def test_dims_that_do_not_fit_the_env(kitchen_rollouts, tmp_path, what):
    arrays = d4rl_arrays(kitchen_rollouts)
    if what == "observations":
        arrays["observations"] = arrays["observations"][:, :17]
    else:
        arrays["actions"] = arrays["actions"][:, :8]
    with pytest.raises(SpirlError) as e:
        load_episodes(write_hdf5(tmp_path / "dims.hdf5", arrays), "kitchen")
    msg = spirl_error(e)
    assert what in msg and "kitchen" in msg and "use a dataset recorded in that env" in msg
    assert ("(17,)" in msg) if what == "observations" else ("(8,)" in msg and "9" in msg)


def test_lengths_that_disagree(kitchen_rollouts, tmp_path):
    arrays = d4rl_arrays(kitchen_rollouts)
    arrays["actions"] = arrays["actions"][:-3]
    with pytest.raises(SpirlError) as e:
        load_episodes(write_hdf5(tmp_path / "len.hdf5", arrays), "kitchen")
    assert "differ in length" in spirl_error(e)


@pytest.mark.parametrize("where", ["observations", "actions"])
def test_nan_in_dataset(kitchen_rollouts, tmp_path, where):
    arrays = d4rl_arrays(kitchen_rollouts)
    arrays[where][7, 3] = np.nan
    with pytest.raises(SpirlError) as e:
        load_episodes(write_hdf5(tmp_path / "nan.hdf5", arrays), "kitchen")
    msg = spirl_error(e)
    assert "NaN" in msg and "1 episode" in msg


def test_unknown_env_for_a_dataset(kitchen_rollouts, tmp_path):
    path = write_hdf5(tmp_path / "ok.hdf5", d4rl_arrays(kitchen_rollouts))
    with pytest.raises(SpirlError) as e:
        load_episodes(path, "kitchn")
    assert "kitchen" in spirl_error(e)


# ----------------------------------------------------------------------------- windows


def synthetic_episodes(lengths, state_dim=5, action_dim=3):
    """Episode a with T_a actions: state[t] = (a, t, ...), action[t] = (a, t, ...)."""
    episodes = []
    for a, T in enumerate(lengths):
        t = np.arange(T + 1, dtype=np.float32)
        states = np.zeros((T + 1, state_dim), np.float32)
        states[:, 0], states[:, 1], states[:, 2:] = a, t, 0.5
        actions = np.zeros((T, action_dim), np.float32)
        actions[:, 0], actions[:, 1] = a, t[:-1]
        episodes.append(Episode(states, actions))
    return episodes


def check_windows(states, actions, lengths, H):
    """Each window lies in one episode, consecutive; returns the (episode, start) of every window."""
    B = len(states)
    assert states.shape == (B, H + 1, 5) and actions.shape == (B, H, 3)
    ep = states[:, 0, 0]
    start = states[:, 0, 1]
    assert torch.equal(states[:, :, 0], ep[:, None].expand(B, H + 1))
    assert torch.equal(actions[:, :, 0], ep[:, None].expand(B, H))
    assert torch.equal(states[:, :, 1], start[:, None] + torch.arange(H + 1))
    assert torch.equal(actions[:, :, 1], start[:, None] + torch.arange(H))
    T = torch.tensor(lengths, dtype=torch.float32)[ep.long()]
    assert (start >= 0).all() and (start + H <= T).all()  # last state index <= T_a
    return list(zip(ep.long().tolist(), start.long().tolist()))


def test_windows_never_cross_episodes_and_cover_every_start():
    lengths = [12, 5, 30, 7, 3]  # actions per episode; H = 5: the 3-action episode is skipped
    H = 5
    with pytest.warns(UserWarning, match=r"1 of 5 episodes are shorter than H\+1 = 6 states"):
        sampler = WindowSampler(synthetic_episodes(lengths), H)
    assert sampler.num_episodes == 4 and sampler.skipped == 1
    states, actions, observations = sampler.sample(3000, torch.Generator().manual_seed(0))
    assert torch.equal(observations, states[:, 0])  # without a renderer the prior sees s_1
    seen = set(check_windows(states, actions, lengths, H))
    expected = {(a, s) for a, T in enumerate(lengths) if T >= H for s in range(T - H + 1)}
    assert seen == expected  # every start (first and last included) is reachable, nothing else


def test_sampling_is_deterministic_for_a_generator_seed():
    sampler = WindowSampler(synthetic_episodes([20, 9, 14]), 4)
    a = sampler.sample(64, torch.Generator().manual_seed(3))
    b = sampler.sample(64, torch.Generator().manual_seed(3))
    c = sampler.sample(64, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_all_windows_yields_each_window_once():
    lengths = [12, 5, 30, 7, 2]
    H = 5
    with pytest.warns(UserWarning, match="1 of 5"):
        sampler = WindowSampler(synthetic_episodes(lengths), H)
    batches = list(sampler.all_windows(batch_size=7))
    assert all(len(s) <= 7 for s, _, _ in batches)
    states = torch.cat([s for s, _, _ in batches])
    actions = torch.cat([a for _, a, _ in batches])
    windows = check_windows(states, actions, lengths, H)
    n = sum(T - H + 1 for T in lengths if T >= H)
    assert len(windows) == n == sampler.num_windows
    assert len(set(windows)) == n
    assert windows == sorted(windows)  # in order


def test_sampling_is_uniform_over_episodes_first():
    H = 4
    lengths = [400, H]  # 397 windows vs exactly 1
    sampler = WindowSampler(synthetic_episodes(lengths), H)
    states, _, _ = sampler.sample(4000, torch.Generator().manual_seed(0))
    short = (states[:, 0, 0] == 1).float().mean().item()
    assert 0.45 < short < 0.55  # uniform over windows would give 1/398


def test_observe_gets_the_previous_state_and_the_episode_index():
    lengths, H = [6, 9], 3
    episodes = synthetic_episodes(lengths)
    calls = []

    def observe(episode, previous, first):
        calls.append((episode, previous, first))
        return torch.cat([first, previous], dim=1)

    with pytest.warns(UserWarning, match="1 of 3"):  # the short episode in the middle is skipped
        sampler = WindowSampler([episodes[0], synthetic_episodes([1])[0], episodes[1]], H, observe)
    assert sampler.skipped == 1
    states, _, observations = sampler.sample(500, torch.Generator().manual_seed(0))
    [(episode, previous, first)] = calls
    assert set(episode.tolist()) == {0, 2}  # indices into the list given, skipped episodes counted
    torch.testing.assert_close(first, states[:, 0])
    for e, p, f in zip(episode.tolist(), previous, first):
        data = (episodes[0] if e == 0 else episodes[1]).states
        t = int(np.flatnonzero((data == f.numpy()).all(1))[0])
        np.testing.assert_array_equal(p.numpy(), data[max(t - 1, 0)])  # s_0 at an episode's start: itself
    assert observations.shape == (500, 2 * states.shape[-1])


def test_window_sampler_bad_horizons():
    episodes = synthetic_episodes([4, 6])
    with pytest.raises(SpirlError) as e:
        WindowSampler(episodes, 7)
    msg = spirl_error(e)
    assert "H+1 = 8" in msg and "lower --skill-horizon" in msg
    for H in (0, -3):
        with pytest.raises(SpirlError) as e:
            WindowSampler(episodes, H)
        assert "--skill-horizon must be at least 1" in spirl_error(e)
    with pytest.warns(UserWarning, match="1 of 2"):
        assert WindowSampler(episodes, 6).num_windows == 1  # H = longest episode still works: one window


def test_windows_from_a_d4rl_file_of_rollouts(kitchen_rollouts, tmp_path):
    episodes = load_episodes(write_hdf5(tmp_path / "w.hdf5", d4rl_arrays(kitchen_rollouts)), "kitchen")
    H = 10
    sampler = WindowSampler(episodes, H)
    assert sampler.num_windows == sum(len(a) - 1 - H + 1 for _, a, _ in kitchen_rollouts)
    states, actions, _ = next(sampler.all_windows(batch_size=1))
    np.testing.assert_array_equal(states[0].numpy(), episodes[0].states[: H + 1])
    np.testing.assert_array_equal(actions[0].numpy(), episodes[0].actions[:H])


# ----------------------------------------------------------------------------- split


def ids(episodes):
    return [int(e.states[0, 0]) for e in episodes]


def test_split_is_by_episode_and_deterministic():
    episodes = synthetic_episodes(list(range(3, 13)))  # 10 episodes
    train, val = split_episodes(episodes, 0.2, seed=0)
    assert len(train) == 8 and len(val) == 2
    assert sorted(ids(train) + ids(val)) == list(range(10))
    assert all(any(e is o for o in episodes) for e in train + val)  # whole episodes, not pieces
    again = split_episodes(episodes, 0.2, seed=0)
    assert ids(again[0]) == ids(train) and ids(again[1]) == ids(val)
    assert any(ids(split_episodes(episodes, 0.2, seed=s)[1]) != ids(val) for s in range(1, 6))


@pytest.mark.parametrize(
    "n, fraction, n_val",
    [(2, 0.01, 1), (2, 0.99, 1), (3, 1.0, 2), (5, 0.5, 2), (1, 0.5, 0), (4, 0.0, 0)],
)
def test_split_sizes(n, fraction, n_val):
    train, val = split_episodes(synthetic_episodes([4] * n), fraction, seed=1)
    assert len(val) == n_val and len(train) == n - n_val
    assert len(train) >= 1
