"""spirl_sac.py: Algorithm 1's pieces (init, KL, Q-target, storage), determinism, resume, bad input."""

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import spirl_pretrain as sp
import spirl_sac as sac
from envs import SpirlError, make_env
from envs.runs import save_checkpoint
from tests.conftest import ROOT, docs_script
from tests.test_pretrain import tiny_args, write_d4rl_file

STATE_DIM, LATENT_DIM = 30, 10


def make_skill_checkpoint(path, seed=0, **config_overrides):
    """A small skill model with non-trivial BatchNorm statistics, saved as spirl_pretrain.py does."""
    torch.manual_seed(seed)
    config = {
        "env": "kitchen",
        "state_dim": STATE_DIM,
        "action_dim": 9,
        "skill_horizon": 10,
        "latent_dim": LATENT_DIM,
        "hidden_dim": 32,
        "prior_layers": 2,
        "dataset": "synthetic",
        "seed": seed,
        "val_fraction": 0.0,
        "beta": 5e-4,
        "num_steps": 0,
        "lr": 1e-3,
        "batch_size": 16,
        "image": False,
        "state_features": None,
    } | config_overrides
    model = sp.SkillModel(**config)
    model.skill_prior.train()
    with torch.no_grad():  # move the running statistics away from 0 / 1
        for _ in range(20):
            model.skill_prior(torch.randn(64, config["state_dim"]) * 3 + 1)
    payload = {"config": config, "model": model.state_dict()}
    save_checkpoint(str(path), payload, kind="spirl_pretrain")
    return str(path)


@pytest.fixture
def skill_ckpt(tmp_path):
    return make_skill_checkpoint(tmp_path / "skills.pt")


def make_learner(skill_ckpt, seed=0, **overrides):
    model, skill_config = sp.load_skill_model(skill_ckpt)
    torch.manual_seed(seed)
    args = sac.Args(**{"critic_hidden": 32, "critic_layers": 2, "delta": 5.0, "squash_scale": 2.0, **overrides})
    return sac.build_learner(args, model.requires_grad_(False), skill_config), model


def random_batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, STATE_DIM, generator=g),
        torch.rand(n, LATENT_DIM, generator=g) * 4 - 2,
        torch.rand(n, generator=g),
        torch.randn(n, STATE_DIM, generator=g),
        (torch.rand(n, generator=g) < 0.2).float(),
        None,
        None,
    )


def sac_args(tmp_path, skill_ckpt, **overrides):
    kwargs = dict(
        prior_checkpoint=skill_ckpt,
        total_env_steps=600,
        warmup_transitions=20,
        batch_size=16,
        critic_layers=1,
        critic_hidden=32,
        eval_every=10_000,
        eval_episodes=1,
        log_every=5,
        checkpoint_every=300,
        run_name=str(tmp_path / "sac_run"),
        threads=1,
    )
    kwargs.update(overrides)
    return sac.Args(**kwargs)


# ----------------------------------------------------------------------------- the method


def test_policy_equals_prior_at_step_zero(skill_ckpt):
    learner, model = make_learner(skill_ckpt)
    states = torch.randn(128, STATE_DIM) * 2
    with torch.no_grad():
        for got, want in zip(learner.policy(states), model.skill_prior(states)):
            assert torch.equal(got, want)
        _, kl = learner.sample_skill(states)
    assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-6)
    assert not learner.policy.training  # BatchNorm in eval mode: pi(z|s) ignores the rest of the batch
    bn = [m for m in learner.policy.modules() if isinstance(m, torch.nn.BatchNorm1d)][0]
    assert bn.running_mean.abs().sum() > 0.1  # the copied statistics are the prior's, not 0 / 1
    # The frozen p_a is a separate network: updating pi must not move it.
    learner.policy.net[0].weight.data.add_(1.0)
    assert not torch.equal(learner.policy(states)[0], model.skill_prior(states)[0])


def test_squash_keeps_skills_in_range_and_scale_two_keeps_the_priors_skills():
    u = torch.linspace(-6, 6, 241)
    for scale in (1.0, 2.0):
        assert sac.squash(u, scale).abs().max() <= 2.0
    small = u[u.abs() <= 0.5]
    assert (sac.squash(small, 2.0) - small).abs().max() < 0.02  # z = u: the prior's own skills
    assert (sac.squash(small, 1.0) - 2 * small).abs().max() < 0.1  # the authors' scale: twice as far out
    with pytest.raises(SpirlError, match="--squash-scale"):
        sac.resolve_args(sac.Args(env="kitchen", squash_scale=0.0))


def test_no_prior_init_starts_elsewhere(skill_ckpt):
    learner, model = make_learner(skill_ckpt, prior_init=False)
    states = torch.randn(16, STATE_DIM)
    assert not torch.allclose(learner.policy(states)[0], model.skill_prior(states)[0])
    assert learner.skill_prior is model.skill_prior  # still regularised towards p_a


def test_analytic_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, log_sigma, prior_mu, prior_log_sigma = (torch.randn(32, LATENT_DIM, generator=g) for _ in range(4))
    d = torch.distributions
    want = d.kl_divergence(
        d.Independent(d.Normal(mu, log_sigma.exp()), 1), d.Independent(d.Normal(prior_mu, prior_log_sigma.exp()), 1)
    )
    got = sac.kl_to_prior(mu, log_sigma, prior_mu, prior_log_sigma)
    assert got.shape == (32,)
    below = want < sac.MAX_KL  # the authors' clamp at 100 applies above
    assert below.sum() > 10
    torch.testing.assert_close(got[below], want[below])
    assert torch.equal(got[~below], torch.full_like(got[~below], sac.MAX_KL))


def test_straight_through_clamps_let_a_policy_gone_past_the_clamps_come_back(skill_ckpt):
    """A policy past both clamps on every state (log sigma at its floor, mu far out: KL ~2e3) gets no gradient from
    the authors' hard clamps, so nothing brings it back; --straight-through-clamps keeps every value (KL, Q-target,
    losses) and restores the gradient, and its KL falls."""
    kls = {}
    for straight_through in (False, True):
        learner, model = make_learner(skill_ckpt, straight_through_clamps=straight_through)
        with torch.no_grad():  # collapse pi: log sigma far below -10 and mu far out, on every state
            learner.policy.net[-1].bias[:LATENT_DIM] += 20.0
            learner.policy.net[-1].bias[LATENT_DIM:] -= 20.0
        states = torch.randn(256, STATE_DIM)
        mu, log_sigma = learner.policy(states)
        assert (log_sigma == -10).all()  # the clamped value either way
        prior = learner.prior_of(states)
        _, kl = learner.sample_skill(states, torch.Generator().manual_seed(0), prior)
        assert (kl == sac.MAX_KL).all()  # the clamped value either way
        learner.policy.zero_grad()
        (
            kl.mean()
            - learner.critic(states, learner.sample_skill(states, None, prior)[0], frozen=True).min(0).values.mean()
        ).backward()
        grads = torch.cat([p.grad.flatten() for p in learner.policy.parameters() if p.grad is not None])
        assert (grads.abs().max() > 1e-3) == straight_through  # no gradient at all through the hard clamps
        with torch.no_grad():
            start = sp.gaussian_kl(mu, log_sigma, *prior.chunk(2, -1)).sum(-1).median()
        batch = random_batch(256)
        batch = (states, *batch[1:5], prior, prior)
        g = torch.Generator().manual_seed(1)
        for _ in range(300):
            sac.sac_update(learner, batch, g)
        with torch.no_grad():
            kls[straight_through] = (
                sp.gaussian_kl(*learner.policy(states), *prior.chunk(2, -1)).sum(-1).median() / start
            )
    assert 0.99 < kls[False] < 1.01  # stuck where it was
    assert kls[True] < 0.5  # on its way back (this small net moves slowly; seed 3's fell 5,000-fold in 2,000)


def test_q_target_uses_the_prior_kl_not_the_entropy(skill_ckpt):
    learner, model = make_learner(skill_ckpt)
    learner.policy.net[-1].bias.data += torch.linspace(-1, 1, 2 * LATENT_DIM)  # pi != p_a, so the KL is not 0
    _, _, rewards, next_states, terminals, _, _ = random_batch()
    alpha = torch.tensor(0.7)
    got = sac.compute_q_target(learner, rewards, next_states, terminals, alpha, torch.Generator().manual_seed(5))
    # The same target, written out with the same noise: r + gamma (1 - d) (min Q' - alpha KL(pi || p_a)).
    mu, log_sigma = learner.policy(next_states)
    noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5))
    z = 2 * torch.tanh((mu + log_sigma.exp() * noise) / learner.squash_scale)
    kl = sac.kl_to_prior(mu, log_sigma, *model.skill_prior(next_states))
    q = learner.critic_target(next_states, z).min(0).values
    want = rewards + 0.99 * (1 - terminals) * (q - 0.7 * kl)
    torch.testing.assert_close(got, want.detach())
    # Moving only the prior moves the target by exactly alpha * the change in KL (no entropy in it).
    model.skill_prior.net[-1].bias.data[:LATENT_DIM] += 0.5
    moved = sac.compute_q_target(learner, rewards, next_states, terminals, alpha, torch.Generator().manual_seed(5))
    new_kl = sac.kl_to_prior(mu, log_sigma, *model.skill_prior(next_states))
    torch.testing.assert_close(moved - got, (-0.99 * (1 - terminals) * 0.7 * (new_kl - kl)).detach())
    assert (moved - got).abs().max() > 1e-3


def test_cached_prior_terms_give_the_same_update(skill_ckpt):
    """The replay buffer stores p_a(.|s) and p_a(.|s'); an update with them equals one that recomputes them."""
    losses = []
    for cached in (False, True):
        learner, model = make_learner(skill_ckpt, seed=3)
        learner.policy.net[-1].bias.data += 0.3  # pi != p_a
        batch = random_batch()
        if cached:
            batch = batch[:5] + (learner.prior_of(batch[0]), learner.prior_of(batch[3]))
        losses.append(sac.sac_update(learner, batch, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(losses[0], losses[1])
    assert losses[0][5] > 0.01  # a non-zero KL was compared


def test_update_moves_alpha_towards_the_target_divergence(skill_ckpt):
    # KL(pi || p_a) = 0 at step 0, below delta = 5, so alpha must shrink; above delta it must grow.
    for delta, direction in ((5.0, -1), (1e-9, 1)):
        learner, _ = make_learner(skill_ckpt, delta=delta, alpha_lr=1e-2)
        if direction > 0:
            learner.policy.net[-1].bias.data += 3.0
        sac.sac_update(learner, random_batch(), torch.Generator().manual_seed(0))
        assert direction * learner.log_alpha.item() > 0


def test_critic_bf16_stays_close_to_float32(skill_ckpt):
    critic = sac.TwinCritic(STATE_DIM, LATENT_DIM, 64, 3)
    states, skills = torch.randn(32, STATE_DIM), torch.rand(32, LATENT_DIM)
    exact = critic(states, skills)
    sac.use_bf16(critic)
    rounded = critic(states, skills)
    assert rounded.dtype == torch.float32 and exact.shape == (2, 32)
    assert (rounded - exact).abs().max() < 0.05 * exact.abs().max() + 1e-3
    assert not torch.equal(rounded, exact)


def test_twin_critics_are_independent_networks():
    critic = sac.TwinCritic(STATE_DIM, LATENT_DIM, 16, 2)
    states, skills = torch.randn(4, STATE_DIM), torch.rand(4, LATENT_DIM)
    q = critic(states, skills)
    assert not torch.allclose(q[0], q[1])
    q[0].sum().backward()  # Q_1's loss reaches only Q_1's weights
    assert all(w.grad[1].abs().sum() == 0 and w.grad[0].abs().sum() > 0 for w in critic.weights)


def test_same_seed_gives_identical_updates(skill_ckpt):
    runs = []
    for _ in range(2):
        learner, _ = make_learner(skill_ckpt, seed=3)
        g = torch.Generator().manual_seed(3)
        runs.append(torch.stack([sac.sac_update(learner, random_batch(seed=i), g) for i in range(5)]))
    assert torch.equal(runs[0], runs[1])
    assert torch.isfinite(runs[0]).all()


# ----------------------------------------------------------------------------- execution and storage


class ScriptedEnv(gym.Env):
    """Reward 1 per step; ends after `length` steps by termination or by truncation."""

    def __init__(self, length=15, truncate=False, reward=1.0):
        self.length, self.truncate, self.reward, self.t = length, truncate, reward, 0
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (9,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(STATE_DIM, np.float32), {"subtasks_completed": 0}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        state = np.full(STATE_DIM, self.t, np.float32)
        return state, self.reward, done and not self.truncate, done and self.truncate, {"subtasks_completed": 1}


class ZeroDecoder:
    """An open-loop decoder stand-in: H zero actions for any skill."""

    closed_loop, skill_horizon = False, 10

    def plan(self, z, first_states):
        return torch.zeros(len(z), self.skill_horizon, 9)


def test_execute_skill_stops_where_the_episode_ends():
    env = ScriptedEnv(length=4)
    state, _ = env.reset()
    state, reward, terminated, truncated, steps, _ = sac.execute_skill(
        env, ZeroDecoder(), torch.zeros(LATENT_DIM), state
    )
    assert (reward, terminated, truncated, steps, state[0]) == (4.0, True, False, 4, 4.0)


def test_closed_loop_skills_decode_each_action_from_the_state_reached(tmp_path):
    """With the authors' closed-loop decoder, action t is decoded from the env's state after t steps."""
    model, _ = sp.load_skill_model(make_skill_checkpoint(tmp_path / "cl.pt", closed_loop=True))
    seen = []

    class Recording(ScriptedEnv):
        def step(self, action):
            seen.append(action)
            return super().step(action)

    env, z = Recording(length=40), torch.randn(LATENT_DIM)
    state, _ = env.reset()
    sac.execute_skill(env, model.decoder, z, state)
    states = torch.stack([torch.full((STATE_DIM,), float(t)) for t in range(10)])  # ScriptedEnv's states
    want = model.decoder(states, z.expand(10, -1)).clamp(-1, 1)
    torch.testing.assert_close(torch.as_tensor(np.stack(seen)), want.detach())


@pytest.mark.parametrize("truncate, bootstrap", [(False, None), (True, None), (True, True)])
def test_episode_ending_mid_skill_is_stored_with_partial_sum_and_right_terminal(
    tmp_path, skill_ckpt, monkeypatch, truncate, bootstrap
):
    """A termination always ends the bootstrap; the time limit too (the paper's envs' default) unless
    --bootstrap-at-time-limit."""
    monkeypatch.setattr(sac, "make_env", lambda name, **kw: ScriptedEnv(length=15, truncate=truncate))
    args = sac_args(tmp_path, skill_ckpt, total_env_steps=30, warmup_transitions=1000, checkpoint_every=10**6)
    sac.train(sac.replace(args, bootstrap_at_time_limit=bootstrap))
    replay = torch.load(tmp_path / "sac_run" / "checkpoint.pt", weights_only=True)["replay"]
    assert replay["size"] == 4  # two episodes of 15 steps = skills of 10 + 5 steps each
    assert replay["rewards"].tolist() == [10.0, 5.0, 10.0, 5.0]
    assert replay["terminals"].tolist() == ([0.0, 0.0] * 2 if bootstrap else [0.0, 1.0] * 2)
    assert replay["next_states"][1, 0] == 15.0  # the last state of the episode, not the next reset


# ----------------------------------------------------------------------------- runs, resume, errors


def scalars(run_dir):
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_smoke_pretrain_then_sac_in_the_kitchen(tmp_path):
    dataset = write_d4rl_file(tmp_path / "tiny.hdf5")
    pretrained = sp.train(tiny_args(tmp_path, dataset, num_steps=30))["checkpoint"]
    result = sac.train(
        sac_args(tmp_path, pretrained, total_env_steps=2000, warmup_transitions=50, eval_every=1000, log_every=10)
    )
    assert result["env_steps"] >= 2000 and result["updates"] > 100
    logged = scalars(tmp_path / "sac_run")
    for tag in (
        "charts/episodic_return",
        "charts/subtasks_completed",
        "charts/eval_subtasks_completed",
        "charts/alpha",
        "charts/kl_to_prior",
        "losses/qf1",
        "losses/qf2",
        "losses/actor",
        "losses/alpha",
    ):
        assert tag in logged and all(np.isfinite(logged[tag])), tag
    assert all(a != 1.0 for a in logged["charts/alpha"])  # alpha is tuned from its start at 1
    assert os.path.isfile(result["policy"])
    # docs/plot_kitchen_rollout.py (Fig. 8) acts with the run's policy, from its checkpoint.pt or its policy.pt
    for saved in (result["checkpoint"], result["policy"]):
        act, kind = docs_script("plot_kitchen_rollout").load_policy(saved)
        env = make_env("kitchen")
        with torch.no_grad():
            assert kind == "spirl_sac" and act(env, env.reset(seed=0)[0])[-1] >= 1  # one skill: its env steps
        env.close()


def test_spirl_sac_runs_on_a_closed_loop_skill_model(tmp_path):
    closed_loop = make_skill_checkpoint(tmp_path / "cl.pt", closed_loop=True, prior_input_block=True)
    result = sac.train(sac_args(tmp_path, closed_loop, total_env_steps=600, warmup_transitions=20))
    assert result["env_steps"] >= 600 and result["updates"] > 0


def test_resume_continues_exactly(tmp_path, skill_ckpt, short_kitchen):
    short_kitchen(sac)  # 100-step episodes
    straight = sac.train(sac_args(tmp_path / "a", skill_ckpt, run_name=str(tmp_path / "a"), total_env_steps=400))
    first = sac.train(sac_args(tmp_path / "b", skill_ckpt, run_name=str(tmp_path / "b"), total_env_steps=250))
    assert 0 < first["updates"] and first["env_steps"] < straight["env_steps"]
    resumed = sac.train(sac.Args(resume=first["checkpoint"], total_env_steps=400, threads=1))
    assert resumed["env_steps"] == straight["env_steps"] and resumed["updates"] == straight["updates"]
    a, b = (torch.load(r["checkpoint"], weights_only=True) for r in (straight, resumed))
    for name in ("policy", "critic", "critic_target"):
        for key, value in a["learner"][name].items():
            assert torch.equal(value, b["learner"][name][key]), (name, key)
    assert torch.equal(a["replay"]["states"], b["replay"]["states"])


def test_replay_keeps_the_prior_of_each_stored_state(tmp_path, skill_ckpt):
    first = sac.train(sac_args(tmp_path, skill_ckpt, total_env_steps=300))
    ckpt = torch.load(first["checkpoint"], weights_only=True)
    model, _ = sp.load_skill_model(skill_ckpt)
    replay = ckpt["replay"]
    with torch.no_grad():
        torch.testing.assert_close(replay["priors"], torch.cat(model.skill_prior(replay["states"]), -1))
        torch.testing.assert_close(replay["next_priors"], torch.cat(model.skill_prior(replay["next_states"]), -1))
    buffer = sac.ReplayBuffer(1000, STATE_DIM, LATENT_DIM)
    sac.runs.load_replay_state(buffer, replay)
    assert buffer.size == replay["size"] and torch.equal(buffer.next_priors[: buffer.size], replay["next_priors"])


def test_bench_clamps_traces_both_clamps_from_a_run_and_they_agree_on_a_healthy_policy(tmp_path, skill_ckpt):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import bench_clamps

    first = sac.train(sac_args(tmp_path, skill_ckpt, total_env_steps=300))
    out = tmp_path / "clamps.json"
    figures = bench_clamps.main([first["checkpoint"], "--updates", "10", "--states", "50", "--out", str(out)])
    assert json.loads(out.read_text()) == figures
    assert figures["env_steps"] == first["env_steps"] and list(figures["hard"]) == ["2", "4", "6", "8", "10"]
    # This policy is inside both clamps, where they differ only in the gradient beyond them: the same updates.
    assert figures["at_checkpoint"]["kl_median"] < sac.MAX_KL and figures["hard"] == figures["straight_through"]
    assert figures["hard"]["10"] != figures["at_checkpoint"]  # the updates did move pi
    with pytest.raises(SystemExit, match="error: "):
        bench_clamps.main([str(tmp_path / "nope.pt"), "--out", str(out)])
    with pytest.raises(SystemExit, match="past the replay"):
        bench_clamps.main([first["checkpoint"], "--updates", "5", "--first-state", "100000", "--out", str(out)])


def test_resume_rejects_a_changed_setting(tmp_path, skill_ckpt):
    first = sac.train(sac_args(tmp_path, skill_ckpt, total_env_steps=100))
    # the one exception, a repair: a run may be continued with straight-through clamps, under a new name
    repaired = sac.train(
        sac.Args(
            resume=first["checkpoint"],
            straight_through_clamps=True,
            run_name=str(tmp_path / "repaired"),
            total_env_steps=first["env_steps"] + 100,
        )
    )
    assert repaired["checkpoint"].startswith(str(tmp_path / "repaired"))
    assert torch.load(repaired["checkpoint"], weights_only=False)["args"]["straight_through_clamps"] is True
    assert torch.load(first["checkpoint"], weights_only=False)["args"]["straight_through_clamps"] is False
    with pytest.raises(SpirlError, match="--delta 2.0 differs"):
        sac.train(sac.Args(resume=first["checkpoint"], delta=2.0))
    with pytest.raises(SpirlError, match="not a spirl_sac.py checkpoint"):
        sac.train(sac.Args(resume=first["policy"]))


def test_a_run_saved_before_a_science_flag_existed_resumes_with_the_old_behaviour(tmp_path, skill_ckpt, monkeypatch):
    monkeypatch.setattr(sac, "make_env", lambda name, **kw: ScriptedEnv(length=15, truncate=True))
    first = sac.train(sac_args(tmp_path, skill_ckpt, total_env_steps=30, warmup_transitions=1000))
    ckpt = torch.load(first["checkpoint"], weights_only=False)
    assert ckpt["args"]["bootstrap_at_time_limit"] is False  # the kitchen's default, stored with the run
    del ckpt["args"]["bootstrap_at_time_limit"]  # as saved by code that always bootstrapped there
    assert sac.runs.resumed_args(sac.Args(resume=first["checkpoint"]), ckpt).bootstrap_at_time_limit is True


def test_overlapped_and_strict_updates_both_learn_deterministically(tmp_path, skill_ckpt, short_kitchen):
    short_kitchen(sac)  # 100-step episodes
    results = [
        sac.train(
            sac_args(tmp_path, skill_ckpt, run_name=str(tmp_path / name), overlap_updates=overlap, total_env_steps=400)
        )
        for name, overlap in (("o1", True), ("o2", True), ("s1", False))
    ]
    ckpts = [torch.load(r["checkpoint"], weights_only=True)["learner"]["critic"] for r in results]
    assert all(torch.equal(ckpts[0][k], ckpts[1][k]) for k in ckpts[0])  # the thread changes nothing run to run
    assert results[0]["updates"] == results[2]["updates"]
    assert not all(torch.equal(ckpts[0][k], ckpts[2][k]) for k in ckpts[0])  # one-transition lag vs strict order


def test_missing_and_mismatched_checkpoints_are_one_line_errors(tmp_path, skill_ckpt, monkeypatch):
    with pytest.raises(SpirlError, match="does not exist"):
        sac.train(sac_args(tmp_path, str(tmp_path / "nope.pt")))
    with monkeypatch.context() as m:  # no --prior-checkpoint and no shipped one: the error names the flag
        m.setitem(sac.env_spec("kitchen"), "default_prior", str(tmp_path / "not-shipped.pt"))
        with pytest.raises(SpirlError, match="--prior-checkpoint"):
            sac.train(sac_args(tmp_path, None))
    other = make_skill_checkpoint(tmp_path / "other.pt", state_dim=31)
    with pytest.raises(SpirlError, match="state dim = 31, not 30"):
        sac.train(sac_args(tmp_path, other))
    other_env = make_skill_checkpoint(tmp_path / "maze.pt", env="maze")
    with pytest.raises(SpirlError, match="--env = maze, not kitchen"):
        sac.train(sac_args(tmp_path, other_env))


@pytest.mark.parametrize("delta", [0.0, -1.0, float("nan")])
def test_delta_must_be_above_zero(tmp_path, skill_ckpt, delta):
    with pytest.raises(SpirlError, match="--delta must be above 0"):
        sac.train(sac_args(tmp_path, skill_ckpt, delta=delta))


def test_nan_loss_names_the_step_and_the_term(tmp_path, skill_ckpt, monkeypatch):
    monkeypatch.setattr(sac, "make_env", lambda name, **kw: ScriptedEnv(length=40, reward=float("nan")))
    with pytest.raises(SpirlError, match=r"qf1 became nan at gradient step 1; lower"):
        sac.train(sac_args(tmp_path, skill_ckpt, total_env_steps=400, warmup_transitions=5))
    assert not os.path.exists(tmp_path / "sac_run" / "checkpoint.pt")


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "spirl_sac.py"), "--delta", "0", "--prior-checkpoint", "x.pt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: --delta must be above 0")
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "spirl_sac.py"), "--prior-checkpoint", "missing.pt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.stderr.startswith("error: checkpoint missing.pt does not exist")


def test_runs_out_of_the_box_on_the_shipped_kitchen_skill_model(tmp_path):
    """`python spirl_sac.py --env kitchen` needs no --prior-checkpoint: the repo ships one."""
    shipped = sac.env_spec("kitchen")["default_prior"]
    assert os.path.isfile(shipped), f"{shipped} is missing from the repo"
    _, config = sp.load_skill_model(shipped, env="kitchen", state_dim=STATE_DIM, action_dim=9)
    assert config["dataset"] == "spirl/kitchen-scripted-v0" and config["skill_horizon"] == 10
    result = sac.train(sac_args(tmp_path, None, total_env_steps=300, warmup_transitions=10))
    assert result["env_steps"] >= 300
    assert torch.load(result["checkpoint"], weights_only=True)["args"]["prior_checkpoint"] == shipped


def test_critic_check_pairs_q_values_with_the_returns_of_each_episode(tmp_path, skill_ckpt, monkeypatch):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import critic_check

    # Two episodes of 25 env steps (3 skills: 10 + 10 + 5 steps, rewards 10, 10, 5), ended by the time limit.
    monkeypatch.setattr(sac, "make_env", lambda name, **kw: ScriptedEnv(length=25, truncate=True))
    args = sac_args(tmp_path, skill_ckpt, total_env_steps=50, warmup_transitions=1000, checkpoint_every=10**6)
    result = critic_check.check(sac.train(args)["checkpoint"])
    assert (result["transitions"], result["episodes"]) == (6, 2)
    assert result["terminal_fraction"] == pytest.approx(2 / 6)  # the time limit ends the bootstrap (kitchen default)
    g = 0.99
    assert result["by_position"][0]["return"] == pytest.approx(10 + g * 10 + g * g * 5)
    assert set(result["by_position"]) == {0} and all(np.isfinite(q["q"]) for q in result["quarters"])
    with pytest.raises(SpirlError, match="neither a spirl_sac.py nor a baselines/ssp.py checkpoint"):
        critic_check.check(skill_ckpt)
    with pytest.raises(SpirlError, match="does not exist"):
        critic_check.check(str(tmp_path / "missing.pt"))
