"""Block stacking: physics, reward, image observations, the scripted data and the methods on it."""

import os
from dataclasses import replace

import numpy as np
import pytest

from envs.block_stacking import (
    BLOCK_HALF,
    COLOURS,
    MAX_OPENING,
    REST_Z,
    VIEW_BELOW,
    VIEW_PIXELS,
    VIEW_SIZE,
    BlockStackingEnv,
    blocks_stacked,
    render_view,
    tower_height,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def short_episodes(monkeypatch, *modules, steps=200):
    """The scripts' 11-block task in `steps`-step episodes (their final evaluation runs `steps` env steps, not 1000)."""
    for module in modules:
        monkeypatch.setattr(
            module, "make_env", lambda name, **kwargs: BlockStackingEnv.downstream(max_episode_steps=steps, **kwargs)
        )


def move(env, y, z, grip, max_steps=80):
    """Drive the gripper to (y, z) with the fingers at `grip`; returns the last (reward, info)."""
    for _ in range(max_steps):
        s = env.state()
        action = np.clip([(y - s[1]) / 0.05, (z - s[2]) / 0.05, grip], [-1, -1, 0], [1, 1, 1])
        _, reward, _, _, info = env.step(action)
        s = env.state()
        if abs(s[1] - y) < 0.003 and abs(s[2] - z) < 0.003 and abs(s[7] - grip * MAX_OPENING) < 0.01:
            break
    return reward, info


def pick_and_place(env, source: int, target: int):
    """The gripper takes block `source` and puts it on block `target`; returns (reward, info) while it
    holds the block above the target, then after it let go and moved away."""
    src = env.block_yz()[source]
    move(env, src[0], 1.1, 1.0)
    move(env, src[0], src[1], 1.0)
    move(env, src[0], src[1], 0.0, max_steps=5)
    move(env, src[0], 1.1, 0.0)
    dst = env.block_yz()[target]
    move(env, dst[0], 1.1, 0.0)
    held = move(env, dst[0], dst[1] + 0.15, 0.0)  # carried above it, not yet on it
    move(env, dst[0], dst[1] + 2 * BLOCK_HALF + 0.003, 0.0)
    move(env, dst[0], dst[1] + 2 * BLOCK_HALF + 0.003, 1.0, max_steps=5)
    return held, move(env, dst[0], 1.2, 1.0)


def test_downstream_scene_starts_with_eleven_blocks_resting_in_a_row():
    env = BlockStackingEnv.downstream()
    obs, info = env.reset(seed=0)
    assert obs.shape == (8 + 3 * 11,) and env.action_space.shape == (3,)
    blocks = obs[8:].reshape(11, 3)
    np.testing.assert_allclose(blocks[:, 2], REST_Z, atol=1e-3)
    np.testing.assert_allclose(blocks[:, 1], np.linspace(-1, 1, 11), atol=1e-3)
    assert info["blocks_stacked"] == 0 and tower_height(blocks[:, 1:]) < 1e-3


def test_a_block_released_above_another_comes_to_rest_on_it():
    env = BlockStackingEnv.downstream()
    env.reset(seed=0)
    below = env.block_yz()[3]
    env.data.qpos[env._blocks[4, :2]] = below + [0.01, 3 * BLOCK_HALF]  # 4 cm above its top, a little off-centre
    for _ in range(20):  # 2 s, the gripper far above and open
        env.step([0, 0, 1])
    top = env.block_yz()[4]
    assert abs(top[0] - below[0]) < BLOCK_HALF and top[1] == pytest.approx(below[1] + 2 * BLOCK_HALF, abs=3e-3)
    assert blocks_stacked(env.block_yz()) == 1


def test_pick_and_place_stacks_and_the_reward_counts_the_stack_once():
    env = BlockStackingEnv.downstream()
    env.reset(seed=0)
    (reward_held, info_held), (reward, info) = pick_and_place(env, 5, 6)
    # Held above block 6: its stacking bonus (2) replaces its lift bonus (1); no tower yet.
    assert info_held["blocks_delivered"] == 1 and reward_held == pytest.approx(2.0, abs=1e-6)
    # On it and let go: the bonus stays, plus 50 x 0.08 m of tower; counted once, not per step's history.
    assert info["blocks_stacked"] == 1 and reward == pytest.approx(2.0 + 50 * 2 * BLOCK_HALF, abs=0.05)
    for _ in range(5):
        _, again, *_ = env.step([0, 0, 1])
    assert again == pytest.approx(reward, abs=0.05)
    # A second pair elsewhere adds its own bonus but no height: only the highest tower counts.
    _, (reward2, info2) = pick_and_place(env, 1, 0)
    assert info2["blocks_stacked"] == 1 and info2["blocks_delivered"] == 2
    assert reward2 == pytest.approx(reward + 2.0, abs=0.05)
    sparse = BlockStackingEnv.downstream(sparse=True)
    sparse.reset(seed=0)
    _, (sparse_reward, _) = pick_and_place(sparse, 5, 6)
    assert sparse_reward == pytest.approx(2 * BLOCK_HALF, abs=1e-3)  # tower height (m) only


def test_training_scene_has_five_blocks_some_stacked_and_none_overlapping():
    env = BlockStackingEnv.training()
    stacked = []
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        assert obs.shape == (8 + 3 * 5,)
        yz = env.block_yz()
        stacked.append(info["blocks_stacked"])
        close = (np.abs(yz[:, None, 0] - yz[None, :, 0]) < 2 * BLOCK_HALF) & (
            np.abs(yz[:, None, 1] - yz[None, :, 1]) < 2 * BLOCK_HALF - 1e-3
        )
        assert close.sum() == 5  # only each block with itself
    assert 0 in stacked and max(stacked) >= 1


def test_image_observation_shows_the_blocks_where_the_simulator_has_them():
    env = BlockStackingEnv.downstream(image=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8 + 3 * 11 + 2 * 3 * 32 * 32,) and 0 <= obs[41:].min() and obs[41:].max() <= 1
    move(env, 0.1, 1.0, 1.0)  # the view follows the gripper: blocks 5 (y = 0) and 6 (y = 0.2) in sight
    obs, *_ = env.step([0, 0, 1])
    frame = (obs[41:].reshape(2, 3, 32, 32)[1] * 255).round()
    state = env.state()
    np.testing.assert_array_equal(frame, render_view(state, env.half_length))
    block_rgb = np.array(COLOURS["block"])[:, None]
    is_block = (np.abs(frame.reshape(3, -1) - block_rgb) < 1).all(0).reshape(32, 32)
    # Pixel coordinates (column from y, row from z, top row up) of each block's centre.
    cols = (env.block_yz()[:, 0] - (state[1] - VIEW_SIZE / 2)) / VIEW_SIZE * VIEW_PIXELS
    rows = ((state[2] - VIEW_BELOW + VIEW_SIZE / 2) - env.block_yz()[:, 1]) / VIEW_SIZE * VIEW_PIXELS
    half = BLOCK_HALF / VIEW_SIZE * VIEW_PIXELS  # 2 pixels
    for col, row in zip(cols[[5, 6]], rows[[5, 6]]):  # blocks 5 (y = 0) and 6 (y = 0.2) are in view
        assert is_block[int(row), int(col)], (row, col)
    r, c = np.nonzero(is_block)  # and every block-coloured pixel lies on some block
    on_a_block = (np.abs(c[:, None] + 0.5 - cols[None]) <= half) & (np.abs(r[:, None] + 0.5 - rows[None]) <= half)
    assert on_a_block.any(1).all() and len(r) >= 2 * 4  # each block's face inside its dark rim


def test_stacked_blocks_stay_apart_in_the_image():
    """A tower of three is three blocks in the frame, not one bar: a dark rim row between each two."""
    env = BlockStackingEnv.training()
    env.reset(seed=0)
    state = env.state()
    blocks = state[8:].reshape(-1, 3)
    blocks[:, 1] = [-0.3, 0.0, 0.0, 0.0, 0.3]
    blocks[:, 2] = [0.84, 0.84, 0.92, 1.0, 0.84]
    state[1:3] = [0.0, 1.2]
    frame = render_view(state, env.half_length).astype(float)
    column = frame[:, :, 16]  # the tower's centre column, top row first
    face = np.abs(column - np.array(COLOURS["block"])[:, None]).max(0) < 1
    runs = np.flatnonzero(np.diff(face.astype(int)) == 1)  # rows where a block face starts
    assert len(runs) == 3


def test_scripted_policy_carries_table_blocks_onto_the_one_tower_as_the_authors_data():
    from envs.block_stacking import REST_Z
    from envs.block_stacking_demos import scripted_episode, tower

    env = BlockStackingEnv.training()
    results = []
    for i in range(10):
        env.reset(seed=7_000 + i)
        start = env.block_yz()
        column = tower(start)  # the training scene: one tower of 1 to 3 blocks, every other block on the table
        assert 1 <= len(column) <= 3 and np.allclose(
            start[[b for b in range(5) if b not in column], 1], REST_Z, atol=1e-3
        )
        results.append((len(column), scripted_episode(env, np.random.default_rng([7, i]), 7_000 + i, stacks=2)))
    assert sum(r["terminated"] for _, r in results) >= 8, [r["stacks"] for _, r in results]
    for height, r in results:
        if r["terminated"]:
            first, final = (r["states"][t][8:].reshape(-1, 3)[:, 1:] for t in (0, -1))
            assert blocks_stacked(final) == height - 1 + 2  # the tower grew by the two carried blocks
            assert r["states"][-1][7] > 0.1  # and the fingers are open above it
            moved = np.abs(final - first).max(1) > 0.01
            assert moved.sum() == 2 and np.allclose(first[moved, 1], REST_Z, atol=1e-3)  # two table blocks moved
            assert len(r["actions"]) < 250 and len(r["states"]) == len(r["actions"]) + 1


def test_collector_keeps_successes_mixes_random_episodes_and_ignores_the_worker_count_and_stops(tmp_path, monkeypatch):
    """Two workers or one, stopped after its first chunk and continued, or not: the same data."""
    import minari

    from envs import block_stacking_demos as demos
    from envs.block_stacking_demos import Args, collect
    from envs.errors import SpirlError

    monkeypatch.setattr(demos, "CHUNK", 4)
    collect_chunk, calls = demos.collect_chunk, []

    def stopped_after_one_chunk(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(args)
        return collect_chunk(*args)

    one = dict(episodes=8, out=str(tmp_path / "w1"), seed=3, random_episode_fraction=0.5, workers=1)
    monkeypatch.setattr(demos, "collect_chunk", stopped_after_one_chunk)
    with pytest.raises(SpirlError, match="the same command continues"):
        collect(Args(**one))
    partial = tmp_path / "w1.partial"
    assert not (tmp_path / "w1").exists() and len(list(partial.glob("chunk_*"))) == 1
    with pytest.raises(SpirlError, match="other settings"):
        collect(Args(**(one | dict(seed=4))))
    collected = []  # the rerun collects from the second chunk on: the first is read back
    monkeypatch.setattr(demos, "collect_chunk", lambda *a: collected.append(a[1]) or collect_chunk(*a))
    summaries, datasets = [collect(Args(**one))], []
    assert not partial.exists() and collected and 0 not in collected
    monkeypatch.setattr(demos, "collect_chunk", collect_chunk)
    summaries.append(collect(Args(**(one | dict(out=str(tmp_path / "w2"), workers=2)))))
    for workers in (1, 2):
        datasets.append(list(minari.MinariDataset(str(tmp_path / f"w{workers}" / "data")).iterate_episodes()))
    assert summaries[0]["episodes"] == 8 and 0.5 < summaries[0]["scripted_success"] <= 1.0
    for a, b in zip(*datasets):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
    lengths = [len(e.actions) for e in datasets[0]]
    assert 0 < lengths.count(250) < 8  # random-action episodes run 250 steps, scripted ones end when done
    assert all(e.observations.shape[1] == 8 + 3 * 5 for e in datasets[0])


def test_collector_rejects_bad_flags_with_one_line_errors(tmp_path):
    from envs.block_stacking_demos import Args, collect
    from envs.errors import SpirlError

    for bad, flag in (
        (dict(workers=-1), "--workers"),
        (dict(random_episode_fraction=1.5), "--random-episode-fraction"),
        (dict(episodes=0), "--episodes"),
    ):
        with pytest.raises(SpirlError, match=flag):
            collect(Args(out=str(tmp_path / "x"), **bad))
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def block_dataset(tmp_path_factory):
    from envs.block_stacking_demos import Args, collect

    out = tmp_path_factory.mktemp("block_data") / "blocks"
    collect(Args(episodes=6, out=str(out), seed=5, workers=1))
    return str(out)


def test_loader_reads_the_scripted_dataset_as_5_block_states_and_actions(block_dataset):
    from envs.datasets import load_episodes

    episodes = load_episodes(block_dataset, "block_stacking")
    assert len(episodes) == 6
    for episode in episodes:
        assert episode.states.shape[1] == 8 + 3 * 5 and episode.actions.shape[1] == 3
        assert len(episode.states) == len(episode.actions) + 1 <= 251
        assert np.all(episode.actions[:, 2] >= 0) and np.all(np.abs(episode.actions) <= 1)
        # every kept scripted episode ends with its last planned stack done: a tower on the table
        assert blocks_stacked(episode.states[-1, 8:].reshape(-1, 3)[:, 1:]) >= 1


def test_image_prior_pretrains_on_the_5_block_data_and_drives_spirl_on_the_11_block_task(
    block_dataset, tmp_path, monkeypatch
):
    import importlib.util

    import spirl_pretrain as sp
    import spirl_sac as sac
    from baselines import ssp  # the skill-space policy without a prior, on the same decoder
    from envs.block_stacking import BlockStackingEnv

    class ShortEpisodes(BlockStackingEnv):  # the 11-block task in 250-step episodes (1000 in the task)
        @classmethod
        def downstream(cls, **kwargs):
            return BlockStackingEnv.downstream(**{"max_episode_steps": 250, **kwargs})

    for module in (sac, ssp):
        monkeypatch.setattr(module, "make_env", lambda name, **kw: ShortEpisodes.downstream(**kw))
    args = sp.Args(
        env="block_stacking",
        image=True,
        dataset=block_dataset,
        num_steps=6,
        batch_size=8,
        hidden_dim=16,
        prior_layers=2,
        val_fraction=0.2,
        val_every=3,
        log_every=3,
        prior_rollouts=1,
        run_name=str(tmp_path / "skills"),
    )
    result = sp.train(args)  # windows of 23-dim states with frames rendered from them
    assert result["prior_rollouts"]["metric"] == "blocks_stacked" and np.isfinite(result["val"]["prior_nll"])
    run = sac.train(
        sac.Args(
            env="block_stacking",
            prior_checkpoint=result["checkpoint"],
            total_env_steps=500,
            warmup_transitions=20,
            batch_size=8,
            critic_hidden=16,
            eval_every=10**6,
            eval_episodes=1,
            log_every=10,
            threads=1,
            run_name=str(tmp_path / "rl"),
        )
    )
    assert run["env_steps"] >= 500 and run["updates"] > 0 and "blocks_stacked" in run["eval"]
    spec = importlib.util.spec_from_file_location(
        "plot_block_stacking", os.path.join(REPO, "docs", "plot_block_stacking.py")
    )
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    monkeypatch.setattr(plot, "BlockStackingEnv", ShortEpisodes)
    for checkpoint, name in ((result["checkpoint"], "prior"), (run["checkpoint"], "policy")):  # the docs' snapshots
        out = tmp_path / f"{name}.png"
        plot.main([checkpoint, "--out", str(out), "--snapshots", "3"])
        assert out.stat().st_size > 5000

    run = ssp.train(
        ssp.Args(
            env="block_stacking",
            prior_checkpoint=result["checkpoint"],
            total_env_steps=500,
            warmup_transitions=20,
            batch_size=8,
            critic_hidden=16,
            eval_every=10**6,
            eval_episodes=1,
            log_every=10,
            threads=1,
            run_name=str(tmp_path / "ssp"),
        )
    )
    assert run["env_steps"] >= 500 and run["updates"] > 0


def test_closed_loop_image_model_reads_the_nearest_blocks_in_the_data_and_in_the_task(block_dataset, tmp_path):
    """The authors' closed-loop decoder on block stacking: it and its encoder see the 23 nearest-block features, the
    same in the 5-block data (23-dim states) and the 11-block task (41 dims, then the frames)."""
    import torch

    import spirl_pretrain as sp
    from envs.block_stacking import nearest_blocks

    args = sp.Args(
        env="block_stacking",
        image=True,
        closed_loop=True,
        dataset=block_dataset,
        num_steps=4,
        batch_size=8,
        hidden_dim=16,
        prior_layers=2,
        val_fraction=0.2,
        val_every=2,
        log_every=2,
        run_name=str(tmp_path / "skills"),
    )
    result = sp.train(args)
    model, config = sp.load_skill_model(result["checkpoint"])
    assert config["decoder_state_features"] == "nearest_blocks" and model.decoder.net[0].in_features == 23 + 10
    env = BlockStackingEnv.downstream(image=True)
    observation = torch.as_tensor(env.reset(seed=0)[0])[None]
    z = torch.randn(1, 10)
    with torch.no_grad():
        from_task = model.decoder(observation, z)  # 41-dim state, then the frames
        from_features = model.decoder.net(torch.cat([nearest_blocks(observation[:, :41]), z], -1))
        window, actions = observation[:, None].expand(-1, 11, -1), torch.zeros(1, 10, 3)
        encoded = model.encode(window, actions)  # the encoder reads the states of observations, not their frames
        from_states = model.encode(window[..., :41], actions)
    torch.testing.assert_close(from_task, from_features)
    torch.testing.assert_close(encoded, from_states)
    scene = torch.as_tensor(BlockStackingEnv.training(image=True).reset(seed=0)[0])[None]  # 23 dims, then frames
    with torch.no_grad():
        torch.testing.assert_close(model.decoder(scene, z), model.decoder(scene[:, :23], z))


def test_flat_sac_runs_on_the_11_block_task(tmp_path, monkeypatch):
    from baselines import sac as flat_sac

    short_episodes(monkeypatch, flat_sac)

    small = dict(hidden=16, layers=2, batch_size=16, warmup_steps=200, eval_every=10**6, eval_episodes=1, log_every=50)
    args = flat_sac.Args(env="block_stacking", total_env_steps=1000, threads=1, run_name=str(tmp_path / "sac"), **small)
    run = flat_sac.train(args)
    assert run["env_steps"] >= 1000 and run["updates"] > 0 and "blocks_stacked" in run["eval"]


def test_nearest_block_features_fit_the_5_block_data_and_the_11_block_task():
    import torch

    from envs.block_stacking import nearest_blocks

    small = BlockStackingEnv.training()
    small.reset(seed=3)
    five = torch.as_tensor(small.state())[None]
    blocks = five[0, 8:].reshape(5, 3)
    far = torch.tensor([[0.0, y, REST_Z] for y in (-1.1, -1.0, 1.0, 1.05, 1.1, 1.15)])  # six more, far away
    eleven = torch.cat([five[0, :8], torch.cat([far[:3], blocks.flip(0), far[3:]]).flatten()])[None]
    assert eleven.shape == (1, 41)
    torch.testing.assert_close(nearest_blocks(eleven), nearest_blocks(five))  # the same 5 nearest, same order
    features = nearest_blocks(five)[0, 8:].reshape(5, 3)
    distances = features[:, 1:].norm(dim=1)
    assert features.shape == (5, 3) and torch.all(distances[1:] >= distances[:-1])  # relative, nearest first


def test_closed_loop_model_that_reads_the_frames_trains_on_rendered_steps_and_drives_spirl(
    block_dataset, tmp_path, monkeypatch
):
    """--decoder-frames (the authors' ImageClSPiRLMdl): the decoder and its encoder read every step's two frames
    through shared conv layers; the windows' steps are rendered from the states (each view once: the frame pairs
    are the views of consecutive steps), and spirl_sac.py decodes from the task's image observations."""
    import torch

    import spirl_pretrain as sp
    import spirl_sac as sac
    from envs.block_stacking import DatasetViews, render_views
    from envs.datasets import skill_windows
    from envs.errors import SpirlError

    train_windows, _ = skill_windows(block_dataset, "block_stacking", 10, 0.2, 1, image=True, step_frames=True)
    states, actions, first = train_windows.sample(4, torch.Generator().manual_seed(0))
    assert states.shape == (4, 11, 23 + 6144) and actions.shape == (4, 10, 3)
    torch.testing.assert_close(first, states[:, 0])
    view = torch.from_numpy(render_views(states[:, 3, :23].numpy(), 0.6).reshape(4, -1)).float() / 255
    torch.testing.assert_close(states[:, 3, 23 + 3072 :], view)  # step 3's current frame
    torch.testing.assert_close(states[:, 4, 23 : 23 + 3072], view)  # ... is step 4's previous one
    single = DatasetViews()(None, states[:, 2, :23].numpy(), states[:, 3, :23].numpy())
    torch.testing.assert_close(states[:, 3], single)  # the same observation as the image prior's pipeline

    small = dict(batch_size=4, hidden_dim=16, prior_layers=2, val_fraction=0.2, val_every=2, log_every=2)
    args = sp.Args(
        env="block_stacking",
        image=True,
        closed_loop=True,
        decoder_frames=True,
        dataset=block_dataset,
        num_steps=2,
        run_name=str(tmp_path / "skills"),
        **small,
    )
    result = sp.train(args)
    model, config = sp.load_skill_model(result["checkpoint"])
    assert config["decoder_state_features"] == "frames" and model.decoder.net[0].in_features == 512 + 10
    assert any(name.startswith("decoder.features.conv") for name in model.state_dict())
    resumed = sp.train(
        sp.Args(env="block_stacking", image=True, closed_loop=True, resume=result["checkpoint"], num_steps=3, **small)
    )
    assert resumed["step"] == 3 and sp.load_skill_model(resumed["checkpoint"])[1]["decoder_state_features"] == "frames"
    with pytest.raises(SpirlError, match="add --image --closed-loop"):
        sp.train(sp.Args(env="block_stacking", closed_loop=True, decoder_frames=True, dataset=block_dataset))
    from baselines import ssp  # the same decoder without the prior: the env must still give it the frames

    short_episodes(monkeypatch, sac, ssp)
    run = sac.train(
        sac.Args(
            env="block_stacking",
            prior_checkpoint=resumed["checkpoint"],
            total_env_steps=300,
            warmup_transitions=10,
            batch_size=8,
            critic_hidden=16,
            eval_every=10**6,
            eval_episodes=1,
            threads=1,
            run_name=str(tmp_path / "rl"),
        )
    )
    assert run["env_steps"] >= 300 and run["updates"] > 0
    small_rl = dict(total_env_steps=150, warmup_transitions=10, batch_size=8, critic_hidden=16, eval_episodes=1)
    args = ssp.Args(env="block_stacking", prior_checkpoint=resumed["checkpoint"], run_name=str(tmp_path / "ssp"))
    run = ssp.train(replace(args, eval_every=10**6, threads=1, **small_rl))
    assert run["env_steps"] >= 150 and run["updates"] > 0


def test_local_block_features_show_the_blocks_in_view_wherever_along_the_table_the_gripper_is():
    import torch

    from envs.block_stacking import LOCAL_FEATURE_DIM, local_blocks, nearest_blocks

    env = BlockStackingEnv.downstream()
    env.reset(seed=0)
    state = torch.as_tensor(env.state())[None]
    state[0, 1] = 0.05  # off the row's symmetry: no two blocks equally near (their order would be a rounding matter)
    state[0, 2] = REST_Z + 0.3  # the table blocks in view below the gripper
    shifted = state.clone()
    shifted[0, 1] += 0.4  # the gripper and every block 0.4 m further along the table
    shifted[0, 9::3] += 0.4
    features = local_blocks(state)
    assert features.shape == (1, LOCAL_FEATURE_DIM) == (1, 26)
    torch.testing.assert_close(local_blocks(shifted), features)
    assert not torch.allclose(nearest_blocks(shifted), nearest_blocks(state))  # these see the gripper's y
    torch.testing.assert_close(features[:, :6], nearest_blocks(state)[:, 2:8])  # the gripper but its x and y
    blocks = features[0, 6:].reshape(5, 4)
    # The row's blocks 0.2 m apart: those at y = 0, 0.2 and 0.4 are in the 0.64 m view around y = 0.05, left to right.
    assert blocks[:, 3].tolist() == [1, 1, 0, 0, 0] or blocks[:, 3].tolist() == [1, 1, 1, 0, 0]
    seen = blocks[blocks[:, 3] == 1]
    assert torch.all(seen[1:, 1] > seen[:-1, 1]) and torch.all(seen[:, 1].abs() < 0.32)
    assert torch.all(blocks[blocks[:, 3] == 0] == 0)


def test_closed_loop_block_model_with_local_features_is_kept_on_resume(block_dataset, tmp_path):
    import spirl_pretrain as sp
    from envs import SpirlError

    small = dict(batch_size=8, hidden_dim=16, prior_layers=2, val_fraction=0.2, val_every=2, log_every=2)
    args = sp.Args(
        env="block_stacking",
        image=True,
        closed_loop=True,
        block_features="local_blocks",
        dataset=block_dataset,
        num_steps=2,
        run_name=str(tmp_path / "skills"),
        **small,
    )
    result = sp.train(args)
    model, config = sp.load_skill_model(result["checkpoint"])
    assert config["decoder_state_features"] == "local_blocks" and model.decoder.net[0].in_features == 26 + 10
    resumed = sp.train(
        sp.Args(env="block_stacking", image=True, closed_loop=True, resume=result["checkpoint"], num_steps=4, **small)
    )
    assert (
        resumed["step"] == 4
        and sp.load_skill_model(resumed["checkpoint"])[1]["decoder_state_features"] == "local_blocks"
    )
    with pytest.raises(SpirlError, match="drop --block-features"):
        sp.train(
            sp.Args(
                env="block_stacking",
                image=True,
                closed_loop=True,
                resume=result["checkpoint"],
                block_features="nearest_blocks",
                **small,
            )
        )
    with pytest.raises(SpirlError, match="drop it for --env kitchen"):
        sp.train(sp.Args(env="kitchen", block_features="local_blocks"))


def test_state_prior_pretrains_on_the_5_block_data_and_drives_spirl_on_the_11_block_task(block_dataset, tmp_path):
    import spirl_pretrain as sp
    import spirl_sac as sac

    result = sp.train(
        sp.Args(
            env="block_stacking",
            dataset=block_dataset,
            num_steps=6,
            batch_size=8,
            hidden_dim=16,
            prior_layers=2,
            val_fraction=0.2,
            val_every=3,
            log_every=3,
            run_name=str(tmp_path / "skills"),
        )
    )
    _, config = sp.load_skill_model(result["checkpoint"])
    assert config["state_features"] == "nearest_blocks" and not config["image"]
    run = sac.train(
        sac.Args(
            env="block_stacking",
            prior_checkpoint=result["checkpoint"],
            total_env_steps=1000,
            warmup_transitions=20,
            batch_size=8,
            critic_hidden=16,
            eval_every=10**6,
            eval_episodes=1,
            log_every=10,
            threads=1,
            run_name=str(tmp_path / "rl"),
        )
    )
    assert run["env_steps"] >= 1000 and run["updates"] > 0


@pytest.mark.parametrize("name, image", [("bc_sac", True), ("flat_prior", True), ("bc_sac", False)])
def test_data_fit_baselines_run_on_the_11_block_task(name, image, block_dataset, tmp_path, monkeypatch):
    """BC + SAC and the flat prior fit their policy to the 5-block data and act in the 11-block task: by default on
    the two stacked frames through a conv encoder (the authors' ImageBCMdl), or on the nearest-block features."""
    import importlib
    from dataclasses import replace

    import torch

    module = importlib.import_module(f"baselines.{name}")
    short = lambda name, **kwargs: BlockStackingEnv.downstream(max_episode_steps=200, **kwargs)  # noqa: E731
    monkeypatch.setattr(module, "make_env", short)  # the 11-block task, in 200-step episodes
    fit = {"bc_sac": {"bc_steps": 20}, "flat_prior": {"prior_steps": 20}}[name]
    small = dict(hidden=16, layers=2, batch_size=16, warmup_steps=100, eval_every=10**6, eval_episodes=1, log_every=50)
    args = module.Args(env="block_stacking", dataset=block_dataset, total_env_steps=400, threads=1, **small, **fit)
    assert module.resolve_args(args).image is True  # the default
    run = module.train(replace(args, image=image, run_name=str(tmp_path / name)))
    assert run["env_steps"] >= 400 and run["updates"] > 0 and "blocks_stacked" in run["eval"]
    ckpt = torch.load(run["checkpoint"], weights_only=True)
    assert ckpt["replay"]["frames"].shape[1] == (6144 if image else 0)  # frames kept as uint8 in the replay
    has_conv = any(key.startswith("conv.") for key in ckpt["learner"]["policy"])
    assert has_conv == image


def test_spirl_sac_runs_out_of_the_box_on_the_shipped_block_stacking_image_prior(tmp_path, monkeypatch):
    """`python spirl_sac.py --env block_stacking` needs no --prior-checkpoint: the repo ships the image prior with the
    authors' closed-loop decoder that reads the frames (ImageClSPiRLMdl, their beta 1e-4), and the paper's open-loop
    one beside it."""
    import torch

    import spirl_pretrain as sp
    import spirl_sac as sac

    shipped = sac.env_spec("block_stacking")["default_prior"]
    assert os.path.isfile(shipped), f"{shipped} is missing from the repo"
    _, config = sp.load_skill_model(shipped, env="block_stacking", state_dim=41, action_dim=3, image=True)
    assert config["dataset"] == "spirl/block-stacking-scripted-v0" and config["beta"] == 1e-4
    assert config["closed_loop"] and config["decoder_state_features"] == "frames"
    open_loop = shipped.replace(".pt", "-open-loop.pt")
    _, config = sp.load_skill_model(open_loop, env="block_stacking", state_dim=41, action_dim=3, image=True)
    assert not config["closed_loop"] and config["beta"] == 1e-2
    short_episodes(monkeypatch, sac)
    result = sac.train(
        sac.Args(
            env="block_stacking",
            total_env_steps=1000,
            warmup_transitions=20,
            batch_size=8,
            eval_every=10**6,
            eval_episodes=1,
            log_every=5,
            run_name=str(tmp_path / "run"),
            threads=1,
        )
    )
    assert result["env_steps"] >= 1000 and "blocks_stacked" in result["eval"]
    assert torch.load(result["checkpoint"], weights_only=True)["args"]["prior_checkpoint"] == shipped
    # Each training episode logs where the dense reward came from, beside the blocks stacked.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    logged = set(events.Tags()["scalars"])
    assert {"charts/blocks_stacked", "charts/blocks_lifted", "charts/blocks_delivered"} <= logged, logged


def test_the_bc_fit_sees_each_pair_as_the_env_shows_it_previous_frame_then_current(block_dataset):
    import torch

    from baselines import bc_sac
    from envs.block_stacking import DatasetViews
    from envs.datasets import load_episodes

    episodes = load_episodes(block_dataset, "block_stacking")
    args = bc_sac.resolve_args(bc_sac.Args(env="block_stacking", dataset=block_dataset, device="cpu"))
    observe = bc_sac.pair_observations(args, episodes)
    first, second = len(episodes[0].actions), len(episodes[0].actions) + 1  # episode 1's first and second pairs
    got = observe(torch.tensor([0, 1, first, second]))
    e0, e1 = episodes[0].states, episodes[1].states
    previous = np.stack([e0[0], e0[0], e1[0], e1[0]])
    states = np.stack([e0[0], e0[1], e1[0], e1[1]])
    expected = DatasetViews()(None, previous, states)
    torch.testing.assert_close(got, expected)


def test_the_critic_inputs_diagnostic_widens_only_the_critics_and_resumes(tmp_path, monkeypatch):
    """bench/block_critic_inputs.py: SPiRL whose critics also see the bonus flags and the time (as its main wires
    it, in 100-step episodes), run and resumed."""
    import sys

    import torch

    import spirl_sac as sac
    from envs.block_stacking import BlockStackingEnv

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    import block_critic_inputs as diagnostic

    short = lambda name, **kw: BlockStackingEnv.downstream(max_episode_steps=100, **kw)  # noqa: E731
    monkeypatch.setattr(diagnostic, "PLAIN_MAKE_ENV", short)
    monkeypatch.setattr(sac, "make_env", diagnostic.make_env)
    monkeypatch.setattr(sac, "load_skill_model", diagnostic.load_skill_model)
    tiny = dict(warmup_transitions=5, batch_size=8, eval_every=10**6, eval_episodes=1, threads=1)
    result = sac.train(sac.Args(env="block_stacking", total_env_steps=200, run_name=str(tmp_path / "run"), **tiny))
    resumed = sac.train(sac.Args(resume=result["checkpoint"], total_env_steps=400, **tiny))
    assert resumed["env_steps"] >= 400 and resumed["updates"] > result["updates"]
    ckpt = torch.load(result["checkpoint"], weights_only=True)
    assert ckpt["skill_config"]["state_dim"] == 41 + 23
    assert ckpt["learner"]["critic"]["weights.0"].shape[1] == 41 + 23 + 10  # state, flags and time, skill
    prior = {k.removeprefix("skill_prior."): v for k, v in ckpt["skill_model"].items() if k.startswith("skill_prior.")}
    assert {k: v.shape for k, v in ckpt["learner"]["policy"].items()} == {k: v.shape for k, v in prior.items()}


@pytest.mark.parametrize(
    "script", ["spirl_sac", "baselines.sac", "baselines.ssp", "baselines.bc_sac", "baselines.flat_prior"]
)
def test_sparse_reward_flag_builds_the_sparse_block_env_and_is_refused_for_other_envs(script, tmp_path, monkeypatch):
    import importlib

    module = importlib.import_module(script)
    with pytest.raises(module.SpirlError, match="--sparse-reward"):
        module.resolve_args(module.Args(env="kitchen", sparse_reward=True))
    if script not in ("spirl_sac", "baselines.sac"):  # the others fit or load a model first; same two lines
        return

    class Built(Exception):
        pass

    def capture(name, **kwargs):
        raise Built(kwargs)

    monkeypatch.setattr(module, "make_env", capture)
    args = module.Args(env="block_stacking", sparse_reward=True, run_name=str(tmp_path / "run"), threads=1)
    with pytest.raises(Built) as built:
        module.train(args)
    assert built.value.args[0]["sparse"] is True
