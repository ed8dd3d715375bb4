"""baselines/: flat SAC, BC + SAC, the flat action prior and SSP run end to end
on every env, log the common metrics and resume; the flat prior's KL and the BC fit are checked."""

from dataclasses import replace as replace_args

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import spirl_sac
from baselines import bc_sac, flat_prior, ssp
from baselines import sac as flat_sac
from envs import load_episodes
from tests.conftest import bench_script, docs_script
from tests.test_maze import maze_dataset  # noqa: F401  (the planner-data fixture, reused)
from tests.test_pretrain import write_d4rl_file

SMALL = dict(
    hidden=16,
    layers=2,
    critic_hidden=16,
    critic_layers=2,
    batch_size=16,
    warmup_steps=200,
    eval_every=10**6,
    eval_episodes=1,
    log_every=50,
    threads=1,
)
METRIC = {"kitchen": "subtasks_completed", "maze": "success"}


@pytest.fixture(scope="module")
def datasets(maze_dataset):  # noqa: F811  (the fixture imported above)
    """A tiny offline dataset per env: random-walk kitchen episodes, and test_maze.py's planner episodes."""
    return {"kitchen": write_d4rl_file(maze_dataset[0].parent / "kitchen.hdf5"), "maze": str(maze_dataset[0])}


def scalars(run_dir):
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return set(events.Tags()["scalars"])


@pytest.mark.parametrize("env", ["kitchen", "maze"])
@pytest.mark.parametrize("module", [flat_sac, bc_sac, flat_prior, ssp], ids=["sac", "bc_sac", "flat_prior", "ssp"])
def test_baseline_runs_logs_the_common_metrics_and_resumes(module, env, datasets, tmp_path, monkeypatch, short_kitchen):
    extra = {
        "sac": SMALL,
        "bc_sac": {**SMALL, "dataset": datasets[env], "bc_steps": 20},
        "flat_prior": {**SMALL, "dataset": datasets[env], "prior_steps": 20},
        "ssp": dict(
            critic_hidden=16,
            batch_size=16,
            warmup_transitions=20,
            eval_every=10**6,
            eval_episodes=1,
            log_every=5,
            threads=1,
        ),
    }[module.__name__.split(".")[-1]]
    steps = 300  # kitchen and the downstream maze here in 100- and 200-step episodes (280 and 2000 in the tasks)
    if env == "kitchen":
        short_kitchen(module)
    else:
        from envs.maze import MazeEnv

        monkeypatch.setattr(module, "make_env", lambda name, **kw: MazeEnv.downstream(max_episode_steps=200, **kw))
    result = module.train(
        module.Args(
            env=env, total_env_steps=steps, checkpoint_every=steps // 2, run_name=str(tmp_path / "run"), **extra
        )
    )
    assert result["env_steps"] >= steps and result["updates"] > 0
    logged = scalars(tmp_path / "run")
    metric = METRIC[env]
    assert {
        "charts/episodic_return",
        f"charts/{metric}",
        f"charts/eval_{metric}",
        "charts/alpha",
        "losses/qf1",
        "losses/actor",
    } <= logged, logged
    resumed = module.train(
        module.Args(resume=result["checkpoint"], total_env_steps=2 * steps, threads=1, eval_episodes=1)
    )
    assert resumed["env_steps"] >= 2 * steps and resumed["updates"] > result["updates"]
    with pytest.raises(module.SpirlError, match="not a baselines"):
        module.train(module.Args(resume=result["policy"]))
    if env == "kitchen":  # docs/plot_kitchen_rollout.py (Fig. 8) rebuilds each baseline's policy and acts with it
        from envs import make_env

        for saved in (resumed["checkpoint"], resumed["policy"]):
            act, kind = docs_script("plot_kitchen_rollout").load_policy(saved)
            kitchen = make_env("kitchen")
            state, _ = kitchen.reset(seed=0)
            with torch.no_grad():
                steps_taken = act(kitchen, state)[-1]
            assert kind == module.__name__.split(".")[-1] and steps_taken >= 1
            kitchen.close()
        # bench/bench_action_prior.py: the flat prior's frozen p(a | s), rolled out in the ordered task.
        bench = ["--episodes", "1", "--tasks", "--out", str(tmp_path / "prior.json")]
        if module is flat_prior:
            figures = bench_script("bench_action_prior").main([resumed["checkpoint"], *bench])
            assert set(figures) >= {"ordered task, mean action", "ordered task, sampled actions"}
            assert all(0 <= figures[f"ordered task, {way}"] <= 4 for way in ("mean action", "sampled actions"))
        elif module is flat_sac:
            with pytest.raises(SystemExit, match="not a baselines/flat_prior.py checkpoint"):
                bench_script("bench_action_prior").main([resumed["checkpoint"], *bench])


def test_flat_prior_kl_matches_the_closed_form_on_gaussians():
    g = torch.Generator().manual_seed(0)
    mu, log_sigma, prior_mu, prior_log_sigma = (torch.randn(64, 9, generator=g) * 0.5 for _ in range(4))
    d = torch.distributions
    policy = d.Independent(d.Normal(mu, log_sigma.exp()), 1)
    want = d.kl_divergence(policy, d.Independent(d.Normal(prior_mu, prior_log_sigma.exp()), 1))
    torch.testing.assert_close(flat_prior.kl_to_prior(mu, log_sigma, prior_mu, prior_log_sigma), want)


def test_flat_prior_policy_starts_as_the_prior_and_its_update_uses_the_kl(datasets):
    args = flat_prior.Args(env="kitchen", dataset=datasets["kitchen"], prior_steps=30, hidden=16, layers=3)
    args = flat_prior.resolve_args(args)
    prior, fit = flat_prior.fit_action_prior(args)
    assert np.isfinite(fit["prior_nll"])
    learner = flat_prior.build_learner(args, prior)
    norms = [m for m in learner.policy.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 2 and not any(m.training for m in norms)  # BCMdl's layout; frozen statistics in RL
    fit_stats = [m.running_mean.clone() for m in norms]
    assert not all(torch.equal(mean, torch.zeros_like(mean)) for mean in fit_stats)  # the statistics are the fit's
    states = torch.randn(32, 30)
    _, kl = learner.sample_action(states)
    assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-6)  # pi = p at the start
    learner.policy.net[-1].bias.data += 0.5
    next_states = torch.randn(32, 30)
    batch = (states, torch.rand(32, 9) * 2 - 1, torch.rand(32), next_states, torch.zeros(32))
    batch += (learner.prior_of(states), learner.prior_of(next_states))  # as the replay stores them
    losses = flat_prior.sac_update(learner, batch, torch.Generator().manual_seed(0))
    assert losses[flat_prior.LOSS_TAGS.index("charts/kl_to_prior")] > 0.01 and torch.isfinite(losses).all()
    assert all(torch.equal(m.running_mean, mean) for m, mean in zip(norms, fit_stats))


def test_bc_loss_falls_on_the_real_kitchen_data(kitchen_complete_path):
    args = bc_sac.resolve_args(bc_sac.Args(env="kitchen", dataset=kitchen_complete_path, bc_steps=400, seed=0))
    episodes = load_episodes(kitchen_complete_path, "kitchen")
    states = torch.from_numpy(np.concatenate([e.states[:-1] for e in episodes]))
    actions = torch.from_numpy(np.concatenate([e.actions for e in episodes]))

    def nll(policy):
        with torch.no_grad():
            return float(bc_sac.gaussian_nll(actions, *policy(states)).mean())

    torch.manual_seed(0)
    untrained = bc_sac.GaussianPolicy(30, 9, args.hidden, args.layers, batch_norm=args.batch_norm).eval()
    torch.manual_seed(0)
    policy, fit = bc_sac.behavioural_cloning(args)
    assert nll(policy) < nll(untrained) - 0.5, (nll(untrained), nll(policy))
    assert fit["pairs"] == len(states)


def sizes(args):
    return (args.hidden, args.layers, args.critic_hidden, args.critic_layers, args.buffer_size)


def test_flat_baseline_sizes_default_to_the_authors_configs_per_env(datasets):
    """flat SAC: MLPPolicy 256 x (n_layers 5 -> 6; maze 2 -> 3), MLPCritic 256 x (2 -> 3), replay 1e5 (maze 1e6);
    BC + SAC and the flat prior: the BC model's 128 x (5 -> 6) with BatchNorm, the same critics and replay."""
    want = {
        flat_sac: {"kitchen": (256, 6, 256, 3, 10**5), "maze": (256, 3, 256, 3, 10**6)},
        bc_sac: {"kitchen": (128, 6, 256, 3, 10**5), "maze": (128, 6, 256, 3, 10**6)},
        flat_prior: {"kitchen": (128, 6, 256, 3, 10**5), "maze": (128, 6, 256, 3, 10**6)},
    }
    for module, per_env in want.items():
        for env, expected in (per_env | {"block_stacking": per_env["kitchen"]}).items():
            args = module.resolve_args(module.Args(env=env))
            assert sizes(args) == expected, (module.__name__, env)
            assert getattr(args, "batch_norm", False) == (module is not flat_sac)
        given = module.resolve_args(module.Args(env="maze", layers=4, buffer_size=500, critic_layers=1))
        assert sizes(given) == (given.hidden, 4, 256, 1, 500)  # a flag given wins over the env's default
    # The networks have those sizes: `layers` hidden linear layers (+ the head), `layers` - 1 BatchNorm blocks.
    args = bc_sac.resolve_args(bc_sac.Args(env="kitchen", dataset=datasets["kitchen"], critic_hidden=32))
    learner = bc_sac.build_learner(args, bc_sac.make_policy(args))
    linears = [m for m in learner.policy.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [128] * 6 + [18]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in learner.policy.modules()) == 5
    assert [tuple(w.shape[1:]) for w in learner.critic.weights] == [(39, 32), (32, 32), (32, 32), (32, 1)]
    learner = flat_sac.build_learner(flat_sac.resolve_args(flat_sac.Args(env="maze")))
    assert [m.out_features for m in learner.policy.modules() if isinstance(m, torch.nn.Linear)] == [256] * 3 + [4]
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in learner.policy.modules())


@pytest.mark.parametrize("bootstrap", [None, True], ids=["default", "bootstrap"])
@pytest.mark.parametrize("module", [flat_sac, bc_sac, flat_prior, ssp], ids=["sac", "bc_sac", "flat_prior", "ssp"])
def test_the_time_limit_ends_the_bootstrap_unless_asked(module, bootstrap, datasets, tmp_path, monkeypatch):
    """Episodes of 15 steps cut by the time limit: their last transition is stored as terminal by default on the
    paper's tasks (the authors' sampler, spirl_sac.py's default), not with --bootstrap-at-time-limit."""
    from tests.test_sac import ScriptedEnv

    monkeypatch.setattr(module, "make_env", lambda name, **kw: ScriptedEnv(length=15, truncate=True))
    name = module.__name__.split(".")[-1]
    extra = {
        "sac": SMALL,
        "bc_sac": {**SMALL, "dataset": datasets["kitchen"], "bc_steps": 2},
        "flat_prior": {**SMALL, "dataset": datasets["kitchen"], "prior_steps": 2},
        "ssp": dict(critic_hidden=16, batch_size=16, warmup_transitions=10**6, threads=1),
    }[name]
    extra = {**extra, "warmup_steps": 10**6} if name != "ssp" else extra  # no updates: only the storage counts
    args = module.Args(
        env="kitchen", total_env_steps=30, run_name=str(tmp_path / "run"), **{"eval_episodes": 1, **extra}
    )
    result = module.train(module.replace(args, bootstrap_at_time_limit=bootstrap))
    replay = torch.load(result["checkpoint"], weights_only=True)["replay"]
    terminals = replay["terminals"][: replay["size"]].tolist()
    per_episode = 2 if name == "ssp" else 15  # skills of 10 + 5 steps, or single steps
    last = 0.0 if bootstrap else 1.0
    assert terminals == ([0.0] * (per_episode - 1) + [last]) * 2


def test_flat_sac_bootstraps_at_time_limits_on_other_gymnasium_tasks_as_cleanrl():
    assert flat_sac.resolve_args(flat_sac.Args(env="Pendulum-v1")).bootstrap_at_time_limit is True
    for module in (flat_sac, bc_sac, flat_prior, ssp, spirl_sac):
        for env in ("kitchen", "maze", "block_stacking"):
            assert module.resolve_args(module.Args(env=env)).bootstrap_at_time_limit is False, (module, env)


def test_flat_sac_entropy_target_defaults_to_minus_the_action_dims():
    assert flat_sac.resolve_args(flat_sac.Args(env="kitchen")).target_entropy == -9.0
    assert flat_sac.resolve_args(flat_sac.Args(env="maze")).target_entropy == -2.0


def assert_same(a, b, where="checkpoint"):
    """Two checkpoint payloads hold the same values (tensors bit for bit), at every level."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("module", [flat_sac, bc_sac, flat_prior], ids=["sac", "bc_sac", "flat_prior"])
def test_flat_baseline_resume_continues_exactly(module, datasets, tmp_path, short_kitchen):
    """Stopped at a checkpoint (after its first updates) and resumed, a run ends as the same run without a
    stop: the same networks, optimisers, alpha, replay, generators and counts."""
    fit = {flat_sac: {}, bc_sac: dict(bc_steps=20), flat_prior: dict(prior_steps=20)}[module]
    fit |= {"dataset": datasets["kitchen"]} if fit else {}
    kitchen = dict(env="kitchen", **SMALL, **fit)
    short_kitchen(module)  # 100-step episodes
    straight = module.train(module.Args(total_env_steps=400, run_name=str(tmp_path / "a"), **kitchen))
    first = module.train(module.Args(total_env_steps=300, run_name=str(tmp_path / "b"), **kitchen))
    assert first["updates"] > 0
    resumed = module.train(module.Args(resume=first["checkpoint"], total_env_steps=400, threads=1, eval_episodes=1))
    assert (resumed["env_steps"], resumed["updates"]) == (straight["env_steps"], straight["updates"])
    a, b = (torch.load(r["checkpoint"], weights_only=True) for r in (straight, resumed))
    for key in ("learner", "replay", "rng", "env_steps", "updates", "episodes"):
        assert_same(a[key], b[key], key)
    if module is flat_prior:  # its replay keeps p(.|s) and p(.|s'); a replay saved without them gets them on resume
        args = flat_prior.resolve_args(flat_prior.Args(**kitchen))
        learner = flat_prior.build_learner(args, flat_prior.make_policy(args).eval())
        flat_prior.runs.load_learner_state(learner, b["learner"])
        older = {k: v for k, v in b["replay"].items() if k not in ("priors", "next_priors")}
        buffer = flat_prior.ReplayBuffer(10, 30, 9)
        for name, states in (("priors", "states"), ("next_priors", "next_states")):
            torch.testing.assert_close(b["replay"][name], learner.prior_of(b["replay"][states]))
            torch.testing.assert_close(flat_prior.with_priors(older, buffer, learner)[name], b["replay"][name])


def test_ssp_policy_is_the_authors_state_mlp_and_its_update_uses_the_entropy():
    import math

    import spirl_pretrain as sp

    model, skill_config = sp.load_skill_model(ssp.env_spec("maze")["default_prior"])
    torch.manual_seed(0)
    args = ssp.resolve_args(ssp.Args(env="maze", critic_hidden=16))
    learner = ssp.build_learner(args, model.requires_grad_(False), skill_config)
    assert learner.target_entropy == pytest.approx(-10 + 9 * math.log(2))  # what the authors' code holds
    linears = [m for m in learner.policy.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 64)] + [(64, 64)] * 3 + [(64, 20)]
    kitchen = ssp.resolve_args(ssp.Args(env="kitchen"))
    assert (kitchen.hidden, kitchen.layers) == (256, 6)  # the authors' kitchen MLPPolicy, nz_mid 256, n_layers 5
    obs = torch.cat([torch.randn(8, 4), torch.rand(8, sp.IMAGE_DIM)], dim=1)  # the frames are not the policy's input
    z, log_prob = learner.sample_skill(obs, torch.Generator().manual_seed(0))
    mu, log_sigma = learner.policy(obs[:, :4])
    u = mu + log_sigma.exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(log_prob, ssp.squashed_log_prob(u, mu, log_sigma))
    assert z.abs().max() <= 2.0


def test_flat_runs_saved_before_frames_and_image_existed_resume(tmp_path, monkeypatch, datasets):
    from tests.test_sac import ScriptedEnv

    monkeypatch.setattr(bc_sac, "make_env", lambda name, **kw: ScriptedEnv(length=15, truncate=True))
    args = bc_sac.Args(env="kitchen", dataset=datasets["kitchen"], total_env_steps=30, run_name=str(tmp_path / "a"))
    first = bc_sac.train(replace_args(args, bc_steps=2, warmup_steps=10, batch_size=8, eval_episodes=1, threads=1))
    ckpt = torch.load(first["checkpoint"], weights_only=True)
    for key in ("frames", "next_frames"):  # as a replay was saved before frames were stored
        del ckpt["replay"][key]
    del ckpt["args"]["image"]
    torch.save(ckpt, tmp_path / "old.pt")
    resumed = bc_sac.train(bc_sac.Args(resume=str(tmp_path / "old.pt"), total_env_steps=60, threads=1))
    assert resumed["env_steps"] >= 60 and resumed["updates"] > first["updates"]


def test_ssp_warms_up_with_uniform_skills_and_rejects_its_older_checkpoints(tmp_path, monkeypatch):
    from tests.test_sac import ScriptedEnv

    monkeypatch.setattr(ssp, "make_env", lambda name, **kw: ScriptedEnv(length=50, truncate=True))
    args = dict(critic_hidden=16, batch_size=16, warmup_transitions=10**6, eval_episodes=1, threads=1)
    result = ssp.train(ssp.Args(env="kitchen", total_env_steps=200, run_name=str(tmp_path / "run"), **args))
    ckpt = torch.load(result["checkpoint"], weights_only=True)
    skills = ckpt["replay"]["skills"][: ckpt["replay"]["size"]]
    generator = torch.Generator().manual_seed(1)  # the run's skill generator (--seed 1), used by nothing else yet
    uniform = torch.stack([2 * (2 * torch.rand(10, generator=generator) - 1) for _ in range(20)])
    torch.testing.assert_close(skills, uniform)  # uniform in [-2, 2]^|Z|, not the fresh policy's samples
    del ckpt["args"]["layers"]  # as written before the policy was the authors' MLP
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(ssp.SpirlError, match="older baselines/ssp.py"):
        ssp.train(ssp.Args(resume=str(tmp_path / "old.pt")))


@pytest.mark.parametrize(
    "module", [flat_sac, bc_sac, flat_prior, ssp, spirl_sac], ids=["sac", "bc_sac", "flat_prior", "ssp", "spirl_sac"]
)
def test_frozen_critic_pass_trains_only_what_made_the_action(module):
    """The actor loss goes through the critics with detached weights: the action gets the same gradient
    as through the live critics, and the critics get none."""
    torch.manual_seed(0)
    critic = module.TwinCritic(30, 9, 16, 2)
    states, actions = torch.randn(8, 30), torch.randn(8, 9, requires_grad=True)
    critic(states, actions).min(0).values.sum().backward()
    want = actions.grad.clone()
    critic.zero_grad(set_to_none=True)
    actions.grad = None
    critic(states, actions, frozen=True).min(0).values.sum().backward()
    torch.testing.assert_close(actions.grad, want)
    assert all(p.grad is None for p in critic.parameters())


def test_a_resume_from_an_older_checkpoint_hides_the_logs_after_it(tmp_path, short_kitchen):
    """A run that died after its last checkpoint logged steps the resumed run logs again: tensorboard's
    purge_step hides the stale ones, so curves have one point per episode."""
    import shutil

    run = tmp_path / "run"
    short_kitchen(flat_sac)  # 100-step episodes
    first = flat_sac.train(flat_sac.Args(env="kitchen", total_env_steps=300, run_name=str(run), **SMALL))
    shutil.copy(first["checkpoint"], tmp_path / "at300.pt")
    flat_sac.train(flat_sac.Args(resume=first["checkpoint"], total_env_steps=400, threads=1, eval_episodes=1))
    shutil.copy(tmp_path / "at300.pt", first["checkpoint"])  # as if the run had died before checkpointing 400
    flat_sac.train(flat_sac.Args(resume=first["checkpoint"], total_env_steps=400, threads=1, eval_episodes=1))
    events = EventAccumulator(str(run))
    events.Reload()
    steps = [e.step for e in events.Scalars("charts/episodic_return")]
    assert steps == [100, 200, 300, 400], steps


# ----------------------------------------------------------------------------- flat SAC on any gymnasium task


def test_flat_sac_runs_on_a_gymnasium_task_with_the_return_as_its_only_measure(tmp_path):
    args = flat_sac.Args(env="Pendulum-v1", total_env_steps=400, run_name=str(tmp_path / "pendulum"), **SMALL)
    result = flat_sac.train(args)
    assert result["env_steps"] == 400 and set(result["eval"]) == {"return"}
    tags = scalars(tmp_path / "pendulum")
    assert {"charts/episodic_return", "charts/eval_return", "losses/qf1"} <= tags
    defaults = flat_sac.resolve_args(flat_sac.Args(env="Hopper-v5"))  # CleanRL's sizes and learning rates, -|A|
    assert (defaults.layers, defaults.critic_layers, defaults.buffer_size, defaults.target_entropy) == (2, 2, 10**6, -3)
    assert (defaults.policy_lr, defaults.critic_lr, defaults.alpha_lr) == (3e-4, 1e-3, 1e-3)
    paper = flat_sac.resolve_args(flat_sac.Args(env="kitchen"))  # the authors' 3e-4 everywhere
    assert (paper.policy_lr, paper.critic_lr, paper.alpha_lr) == (3e-4, 3e-4, 3e-4)


def test_policy_actions_are_rescaled_onto_the_env_box():
    import gymnasium

    box = gymnasium.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    ends = flat_sac.to_env(np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]], np.float32), box)
    np.testing.assert_allclose(ends, [[-2.0, 0.0], [2.0, 1.0], [0.0, 0.5]])  # Pendulum's +-2 and a [0, 1] grip
    unit = gymnasium.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action = np.array([-0.3, 0.7, 1.0], np.float32)
    assert flat_sac.to_env(action, unit) is action  # the paper's kitchen and maze: untouched


@pytest.mark.parametrize(
    "env, message", [("Hoper-v5", "gymnasium id"), ("CartPole-v1", "Box action space")], ids=["typo", "discrete"]
)
def test_flat_sac_rejects_what_it_cannot_run_in_one_line(env, message):
    from envs import SpirlError

    with pytest.raises(SpirlError, match=message) as e:
        flat_sac.resolve_args(flat_sac.Args(env=env))
    assert "\n" not in str(e.value)
    with pytest.raises(SpirlError, match="unknown env"):  # the skill-based scripts keep to the paper's envs
        spirl_sac.resolve_args(spirl_sac.Args(env="Pendulum-v1"))


# ----------------------------------------------------------------------------- --device


@pytest.mark.parametrize("module", [spirl_sac, flat_sac, bc_sac, flat_prior, ssp])
def test_device_defaults_to_cuda_when_there_is_one_and_a_missing_one_is_a_one_line_error(module):
    from envs import SpirlError

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert module.resolve_args(module.Args(env="kitchen")).device == expected
    assert module.resolve_args(module.Args(env="kitchen", device="cpu")).device == "cpu"
    for bad in ["tpu"] + ([] if torch.cuda.is_available() else ["cuda"]):
        with pytest.raises(SpirlError, match="--device") as e:
            module.resolve_args(module.Args(env="kitchen", device=bad))
        assert "\n" not in str(e.value)
