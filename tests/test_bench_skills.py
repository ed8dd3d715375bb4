"""bench/bench_skills.py end to end on the shipped kitchen model, with one episode of each kind (about 15 s)."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))

import bench_skills  # noqa: E402

from envs.datasets import load_episodes  # noqa: E402
from envs.kitchen import KitchenEnv  # noqa: E402
from envs.kitchen_demos import Args as CollectArgs  # noqa: E402
from envs.kitchen_demos import collect
from envs.kitchen_scripted import SubtaskController  # noqa: E402


@pytest.fixture(scope="module")
def two_episodes(tmp_path_factory):
    """Two scripted kitchen episodes, collected once for the tests below."""
    data = tmp_path_factory.mktemp("bench_data") / "kitchen-2"
    collect(CollectArgs(episodes=2, out=str(data), seed=5))
    return data


def test_a_snapshot_puts_the_env_back_exactly():
    env = KitchenEnv()
    env.reset(seed=0)
    ctrl = SubtaskController(env, "microwave", np.random.default_rng(0), action_noise=0.0)
    for _ in range(5):
        env.step(ctrl.act())
    snapshot, qpos = bench_skills.Snapshot(env), env.qpos.copy()
    actions = [ctrl.act() for _ in range(15)]
    first = [env.step(a)[0] for a in actions]
    snapshot.restore()
    assert np.array_equal(env.qpos, qpos) and env._t == 5
    again = [env.step(a)[0] for a in actions]  # the same actions give the same observations, noise included
    assert np.array_equal(np.asarray(again), np.asarray(first))


@pytest.mark.skipif(not os.path.exists(bench_skills.Args.checkpoint), reason="no shipped kitchen checkpoint")
def test_bench_skills_writes_every_figure(tmp_path, two_episodes):
    data = two_episodes
    out = tmp_path / "skills.json"
    figures = bench_skills.main(["--episodes", "1", "--dataset", str(data), "--out", str(out)])
    assert json.loads(out.read_text()) == figures
    assert figures["held_out_episodes"] == 1 and 0 < figures["window_mse"]["reconstruction_mse"] < 1
    assert figures["replay"]["recorded_actions"] >= 1  # the recorded actions redo what the episode did
    assert 0 <= figures["oracle"]["decoded_skills"]["mean_subtasks"] <= 4
    assert figures["oracle"]["scripted_actions"]["mean_subtasks"] >= 1
    assert sum(figures["oracle"]["scripted_actions"]["stopped_at"].values()) == 1
    gaps = figures["oracle"]["decoded_skills"]["prior_gap_median"]
    assert "microwave" in gaps and all(np.isfinite(g) for g in gaps.values())
    assert sum(figures["prior"]["first_subtask"].values()) == pytest.approx(1.0)
    executed = figures["prior_as_executed"]
    assert set(executed) == {"z = 2 tanh(u / 1)", "z = 2 tanh(u / 2)"} and all(0 <= v <= 4 for v in executed.values())
    assert list(figures["prior_next_subtask"]) == ["after microwave", "after kettle", "after bottom burner"]
    assert all(0 <= v <= 1 for probe in figures["prior_next_subtask"].values() for v in probe.values())
    assert len(figures["random_skills"]["per_episode"]) == 1 and 0 <= figures["random_skills"]["mean_subtasks"] <= 4
    assert set(figures["first_skill_logp"]) >= {"microwave", "kettle", "prior_samples"}
    logp = figures["first_skill_logp"].values()
    assert all(v["min"] <= v["mean"] <= v["max"] and np.isfinite(v["mean"]) for v in logp)


@pytest.mark.parametrize("closed_loop", [True, False])
def test_skills_run_as_spirl_sac_runs_them_with_either_decoder(two_episodes, closed_loop):
    """run_skill, which the replay, oracle and prior rollouts all use: a closed-loop decoder acts on each step's
    observation, an open-loop one plays the actions planned from the first; a held-out replay runs either."""
    import torch

    import spirl_pretrain as sp

    config = dict(state_dim=30, action_dim=9, skill_horizon=10, latent_dim=4, hidden_dim=16, prior_layers=1)
    torch.manual_seed(0)
    model = sp.SkillModel(**config, closed_loop=closed_loop).eval()
    env = KitchenEnv()
    observation, _ = env.reset(seed=0)
    sent, step = [], env.step
    env.step = lambda action: (sent.append(action), step(action))[1]
    z = torch.randn(4)
    _, done, _, last = bench_skills.run_skill(env, model, z, observation, steps=10, skip=3)
    assert len(sent) == 7 and not done and last.shape == observation.shape
    with torch.no_grad():
        if closed_loop:  # the last action came from the observation before it, not from the first one
            env2 = KitchenEnv()
            before, _ = env2.reset(seed=0)
            for action in sent[:-1]:
                before = env2.step(action)[0]
            expected = model.decoder(torch.as_tensor(before)[None], z[None])[0]
        else:
            expected = model.decoder.plan(z[None], torch.as_tensor(observation)[None])[0][9]
    assert np.allclose(sent[-1], expected.clamp(-1, 1).numpy(), atol=1e-5)
    episodes = load_episodes(str(two_episodes), "kitchen")[:1]
    figures = bench_skills.replay(model, episodes, H=10)
    assert figures["episodes"] == 1 and figures["recorded_actions"] >= 1 and 0 <= figures["decoded_skills"] <= 4


BLOCK_PRIOR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "checkpoints",
    "block-stacking-image-skills-open-loop.pt",
)


@pytest.mark.skipif(not os.path.exists(BLOCK_PRIOR), reason="no shipped block-stacking checkpoint")
def test_bench_skills_probes_a_block_stacking_prior(tmp_path):
    from envs.block_stacking_demos import Args as CollectBlocks
    from envs.block_stacking_demos import collect as collect_blocks

    data = tmp_path / "blocks"
    collect_blocks(CollectBlocks(episodes=3, out=str(data), seed=5, workers=1))
    out = tmp_path / "skills_block_stacking.json"
    args = ["--checkpoint", BLOCK_PRIOR, "--episodes", "1", "--squash-scales", "2", "--task-steps", "100"]
    figures = bench_skills.main([*args, "--dataset", str(data), "--out", str(out)])
    assert json.loads(out.read_text()) == figures
    replayed = figures["in_distribution"]  # one held-out episode: the recorded actions make its stacking steps
    assert replayed["tower gain, recorded actions"] >= 1
    assert set(replayed) == {
        f"tower gain, {m}" for m in ("recorded actions", "encoded windows", "prior samples", "prior mean")
    }
    assert len(figures["probes"]) == 12 and all(v in (0.0, 1.0) for v in figures["probes"].values())
    assert set(figures["prior_rollouts"]) == {"5-block scene", "11-block task", "11-block task, z = 2 tanh(u / 2)"}
    decoded, scripted = figures["oracle"]["decoded_skills"], figures["oracle"]["scripted_actions"]
    assert 0 <= decoded["at the end"] <= decoded["best"] <= 10 and scripted["per_episode_end"] == [
        scripted["at the end"]
    ]
    assert decoded["action MSE of the decoded windows while building"] >= 0
    offset_median, offset_high = decoded["gripper offset from the plan at each skill's end while building, cm (50/90%)"]
    assert 0 <= offset_median <= offset_high
    low, median, high = decoded["prior logp of its skills while building (10/50/90%)"]
    assert low <= median <= high and np.isfinite(median)
    # The shipped open-loop skills reconstruct scripted windows in both scenes (measured 0.011-0.013 in y and z).
    fit = figures["window_fit"]
    in_data = fit["action MSE (y, z, grip), the data's scripted episodes"]
    in_task = fit["action MSE (y, z, grip), the tower builder in the task"]
    assert len(in_data) == len(in_task) == 3 and max(in_data) < 0.05 and max(in_task) < 0.1
    # The open-loop decoder reads nothing but z: without the window's own z its horizontal moves are lost.
    for name in ("z = 0", "another window's z"):
        assert fit[f"action MSE (y, z, grip), the data's scripted episodes, {name}"][0] > 3 * in_data[0], name


@pytest.mark.skipif(not os.path.exists(BLOCK_PRIOR), reason="no shipped block-stacking checkpoint")
def test_decoder_inversion_brings_the_decoded_actions_closer_and_stays_in_the_policys_range():
    """--oracle-refine-steps: from the encoder mean of a jerky window (random actions, harder than any data window),
    Adam on z lowers the decoded actions' error, and z stays within |z| <= 2 (what the high-level policy can output)."""
    import torch

    from spirl_pretrain import load_skill_model

    model, _ = load_skill_model(BLOCK_PRIOR)
    rng = np.random.default_rng(0)
    actions = np.clip(rng.normal(0, 0.7, (10, 3)), -1, 1).astype(np.float32)
    actions[:, 2] = 1.0
    z = bench_skills.encode(model, np.zeros((11, 41), np.float32), actions)  # the open-loop encoder reads actions

    def error(z):
        with torch.no_grad():
            return float((model.decoder(z[None])[0].clamp(-1, 1) - torch.as_tensor(actions)).pow(2).mean())

    refined = bench_skills.refine_skill(model, z, actions, steps=60, bound=2.0)
    assert error(refined) < 0.8 * error(z)
    assert refined.abs().max() <= 2.0 and refined.shape == z.shape


def test_the_oracles_tower_builder_stacks_in_the_11_block_task():
    """The ceiling of the block-stacking oracle: the data's scripted policy, run on the 11-block task, builds its
    tower there (the second block on the base within 150 steps, a 3-block tower within 300)."""
    from envs.block_stacking import BlockStackingEnv, blocks_stacked

    env = BlockStackingEnv.downstream(max_episode_steps=300)
    env.reset(seed=0)
    builder, stacked = bench_skills.TowerBuilder(env, np.random.default_rng(0)), []
    for _ in range(300):
        env.step(builder.act(env.state()))
        builder.observe(env.state())
        stacked.append(blocks_stacked(env.block_yz()))
    assert max(stacked[:150]) >= 1 and stacked[-1] >= 2 and len(builder.column) == stacked[-1] + 1, stacked[::25]
    env.reset(seed=0)  # --oracle-min-carry: the first block carried is the nearest one at least that far away
    far = bench_skills.TowerBuilder(env, np.random.default_rng(0), min_carry=0.35)
    far.act(env.state())
    yz = env.block_yz()
    assert (
        abs(yz[far.source, 0] - yz[far.column[0], 0]) >= 0.35 > abs(yz[builder.column[1], 0] - yz[builder.column[0], 0])
    )


def test_a_probe_situation_holds_the_block_above_the_tower():
    from envs.block_stacking import BlockStackingEnv

    env = BlockStackingEnv.downstream()
    env.reset(seed=0)
    _, y0 = bench_skills.block_situation(env, np.random.default_rng(1), 2, holding=True)
    assert env.grasped(env.state())[-1] and bench_skills.column_size(env.block_yz(), y0) == 2
    for _ in range(10):  # lowered onto the tower and let go, it makes the tower one block taller
        env.step(np.array([0.0, -0.5, 0.0]))
    for _ in range(5):
        env.step(np.array([0.0, 0.0, 1.0]))
    assert bench_skills.column_size(env.block_yz(), y0) == 3


@pytest.mark.skipif(not os.path.exists(bench_skills.Args.checkpoint), reason="no shipped kitchen checkpoint")
def test_random_skills_fill_the_policy_box_as_ssp_warm_up(monkeypatch):
    """The random-skill rollouts draw z uniformly from [-2, 2]^|Z|, not from the prior."""
    import torch

    from spirl_pretrain import load_skill_model

    seen = []

    def one_skill_episode(env, model, z, observation, steps):
        seen.append(z.clone())
        return [], True, {"subtasks_completed": 0}, observation

    monkeypatch.setattr(bench_skills, "run_skill", one_skill_episode)
    model, _ = load_skill_model(bench_skills.Args.checkpoint)
    figures = bench_skills.prior_rollouts(model, episodes=40, seed=0, uniform=True)
    z = torch.stack(seen)
    assert figures["per_episode"] == [0] * 40 and z.shape == (40, model.decoder.latent_dim)
    assert z.abs().max() <= 2 and z.max() > 1.8 and z.min() < -1.8 and abs(z.mean()) < 0.2


def test_prior_gap_is_zero_on_average_for_the_priors_own_samples_and_grows_away_from_its_mean():
    """prior_gap(z) = E[log p(sample)] - log p(z): about 0 for samples of the prior itself, about -|Z| / 2 at its
    mean (the mode is more likely than a typical sample), and large for a skill far out in its tails."""
    import torch

    import spirl_pretrain as sp

    config = dict(state_dim=30, action_dim=9, skill_horizon=10, latent_dim=4, hidden_dim=16, prior_layers=1)
    torch.manual_seed(0)
    model = sp.SkillModel(**config).eval()
    observation = np.zeros(30, dtype=np.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        mu, log_sigma = model.skill_prior(torch.as_tensor(observation)[None])
        samples = mu + torch.exp(log_sigma) * torch.randn((2000, 4), generator=generator)
    own = np.mean([bench_skills.prior_gap(model, observation, z, generator, samples=4096) for z in samples[:400]])
    assert abs(own) < 0.3
    assert bench_skills.prior_gap(model, observation, mu[0], generator, samples=4096) == pytest.approx(-2.0, abs=0.2)
    far = mu[0] + 5 * torch.exp(log_sigma[0])
    assert bench_skills.prior_gap(model, observation, far, generator) > 40


@pytest.mark.skipif(not os.path.exists(bench_skills.Args.checkpoint), reason="no shipped kitchen checkpoint")
def test_bench_skills_oracle_only_measures_the_decoded_oracle_and_its_prior_gap_alone(tmp_path, two_episodes):
    out = tmp_path / "oracle.json"
    figures = bench_skills.main(["--episodes", "1", "--dataset", str(two_episodes), "--out", str(out), "--oracle-only"])
    assert json.loads(out.read_text()) == figures
    assert list(figures["oracle"]) == ["decoded_skills"] and "prior_gap_median" in figures["oracle"]["decoded_skills"]
    assert not {"replay", "prior", "prior_next_subtask", "first_skill_logp"} & set(figures)
