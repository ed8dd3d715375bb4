"""spirl_pretrain.py: the model matches its plain definition, eq. 4's terms, checkpoints, bad input."""

import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import spirl_pretrain as sp
from envs import SpirlError
from tests.conftest import ROOT


def write_d4rl_file(path, episodes=6, length=40, seed=0, action_scale=1.0):
    """A small D4RL-format kitchen file: smooth random actions, states from a random walk."""
    rng = np.random.default_rng(seed)
    n = episodes * length
    actions = np.clip(np.cumsum(rng.normal(0, 0.1, (n, 9)), 0), -1, 1) * action_scale
    qpos = np.cumsum(rng.normal(0, 0.01, (n, 30)), 0)
    with h5py.File(path, "w") as f:
        f["observations"] = np.concatenate([qpos, np.zeros((n, 30))], 1).astype(np.float32)
        f["actions"] = actions.astype(np.float32)
        f["terminals"] = (np.arange(n) % length) == length - 1
        f["timeouts"] = np.zeros(n, bool)
    return str(path)


@pytest.fixture
def tiny_dataset(tmp_path):
    return write_d4rl_file(tmp_path / "tiny.hdf5")


def tiny_args(tmp_path, dataset, **overrides):
    sizes = dict(hidden_dim=32, prior_layers=2, num_steps=20, batch_size=16, val_fraction=0.2)
    every = dict(log_every=5, val_every=10, checkpoint_every=10)
    return sp.Args(**dict(dataset=dataset, run_name=str(tmp_path / "run"), **sizes, **every) | overrides)


def make_model(hidden_dim=32, prior_layers=2, **layout):
    torch.manual_seed(0)
    sizes = dict(state_dim=30, action_dim=9, skill_horizon=10, latent_dim=10, hidden_dim=hidden_dim)
    return sp.SkillModel(prior_layers=prior_layers, **sizes, **layout)


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("learned_initial_state", [False, True])
def test_fused_forward_equals_plain_forward_with_gradients(learned_initial_state):
    model = make_model(learned_initial_state=learned_initial_state)
    with torch.no_grad():  # a learned initial state away from zero, as after training
        model.decoder.initial_state.normal_()
    actions = torch.rand(8, 10, 9) * 2 - 1
    z = torch.randn(8, 10)
    for net, x in ((model.encoder, actions), (model.decoder, z)):
        outputs = []
        for fn in (net.forward_fused, net.forward):
            model.zero_grad()
            y = fn(x)
            y = torch.cat(y, -1) if isinstance(y, tuple) else y
            (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
            grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
            outputs.append((y.detach(), grads))
        (y1, g1), (y2, g2) = outputs
        torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-4)
        assert len(g1) == len(g2) > 0
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_closed_loop_model_decodes_each_action_from_its_state():
    """The closed-loop decoder (the authors' SPiRL v2): action t depends on s_t and z only; the encoder sees the states
    too; the prior gets the authors' input block without BatchNorm."""
    model = make_model(closed_loop=True, prior_input_block=True).eval()
    states, actions, z = torch.randn(4, 11, 30), torch.rand(4, 10, 9) * 2 - 1, torch.randn(4, 10)
    decoded = model.decode(z, states)
    assert decoded.shape == (4, 10, 9)
    torch.testing.assert_close(decoded[:, 3], model.decoder(states[:, 3], z))  # one step at a time, as in the env
    moved = states.clone()
    moved[:, 3] += 1.0
    changed = (model.decode(z, moved) - decoded).abs().amax(dim=(0, 2))
    assert changed[3] > 0 and changed[torch.arange(10) != 3].max() == 0
    assert not torch.equal(model.encode(moved, actions)[0], model.encode(states, actions)[0])
    layers = [m for m in model.skill_prior.net if isinstance(m, (torch.nn.Linear, torch.nn.BatchNorm1d))]
    assert isinstance(layers[0], torch.nn.Linear) and isinstance(layers[1], torch.nn.Linear)  # no BatchNorm first
    losses = sp.skill_prior_loss(model.train(), states, actions, beta=5e-4)
    losses[3].backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_decoder_feeds_back_its_previous_action():
    """The first action depends on the learned initial action; later ones on the fed-back output."""
    model = make_model()
    z = torch.randn(4, 10)
    before = model.decoder(z).detach()
    with torch.no_grad():
        model.decoder.first_action.add_(1.0)
    after = model.decoder(z).detach()
    assert not torch.allclose(before[:, 0], after[:, 0])
    assert not torch.allclose(before[:, -1], after[:, -1])


def test_prior_is_batchnorm_mlp_of_the_requested_depth():
    prior = sp.SkillPrior(state_dim=30, latent_dim=10, hidden_dim=128, layers=6)
    linears = [m for m in prior.net if isinstance(m, torch.nn.Linear)]
    norms = [m for m in prior.net if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(linears) == 7 and len(norms) == 6
    assert all(m.bias is None for m in linears[:-1]) and linears[-1].out_features == 20


# ----------------------------------------------------------------------------- eq. 4


def test_gaussian_kl_matches_torch_distributions_and_closed_form():
    torch.manual_seed(0)
    mu_q, mu_p = torch.randn(5, 10), torch.randn(5, 10)
    ls_q, ls_p = torch.randn(5, 10) * 0.5, torch.randn(5, 10) * 0.5
    ours = sp.gaussian_kl(mu_q, ls_q, mu_p, ls_p)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu_q, ls_q.exp()), torch.distributions.Normal(mu_p, ls_p.exp())
    )
    torch.testing.assert_close(ours, ref)
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dim; KL(N(0, e^2) || N(0, 1)) = (e^2 - 1)/2 - 1.
    zeros = torch.zeros(3)
    torch.testing.assert_close(sp.gaussian_kl(torch.ones(3), zeros, zeros, zeros), torch.full((3,), 0.5))
    expected = (np.e**2 - 1) / 2 - 1
    torch.testing.assert_close(sp.gaussian_kl(zeros, torch.ones(3), zeros, zeros), torch.full((3,), expected))


def test_gaussian_nll_matches_torch_distributions():
    x, mu, ls = torch.randn(6, 10), torch.randn(6, 10), torch.randn(6, 10) * 0.3
    ref = -torch.distributions.Normal(mu, ls.exp()).log_prob(x)
    torch.testing.assert_close(sp.gaussian_nll(x, mu, ls), ref)


def test_prior_loss_sends_no_gradient_into_encoder_or_decoder():
    model = make_model()
    states, actions = torch.randn(16, 11, 30), torch.rand(16, 10, 9) * 2 - 1
    losses = sp.skill_prior_loss(model, states, actions, beta=5e-4)
    losses[2].backward(retain_graph=True)  # the prior term alone
    for name, p in model.named_parameters():
        touched = p.grad is not None and bool(p.grad.abs().sum() > 0)
        assert touched == name.startswith("skill_prior."), name
    model.zero_grad(set_to_none=True)
    (losses[0] + losses[1]).backward()  # reconstruction + regularization never reach the prior
    assert all(p.grad is None or not p.grad.any() for p in model.skill_prior.parameters())
    assert all(p.grad is not None and p.grad.any() for p in model.encoder.parameters())


def test_loss_terms_match_eq4_with_the_authors_scaling():
    model = make_model().eval()
    states, actions = torch.randn(16, 11, 30), torch.rand(16, 10, 9) * 2 - 1
    torch.manual_seed(3)
    rec, kl, prior, total = sp.skill_prior_loss(model, states, actions, beta=0.25)
    torch.manual_seed(3)
    mu, ls = model.encoder(actions)
    z = mu + ls.exp() * torch.randn_like(mu)
    q = torch.distributions.Normal(mu, ls.exp())
    mu_p, ls_p = model.skill_prior(states[:, 0])
    torch.testing.assert_close(rec, 0.5 * ((model.decoder(z) - actions) ** 2).mean())
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, torch.distributions.Normal(0, 1)).mean())
    torch.testing.assert_close(
        prior, torch.distributions.kl_divergence(q, torch.distributions.Normal(mu_p, ls_p.exp())).mean()
    )
    torch.testing.assert_close(total, rec + 0.25 * kl + prior)


# ----------------------------------------------------------------------------- training and checkpoints


def test_checkpoint_round_trip_and_metadata(tmp_path, tiny_dataset):
    result = sp.train(tiny_args(tmp_path, tiny_dataset))
    model, config = sp.load_skill_model(result["checkpoint"], env="kitchen", state_dim=30, skill_horizon=10)
    sizes = dict(env="kitchen", state_dim=30, action_dim=9, skill_horizon=10, latent_dim=10, hidden_dim=32)
    assert config == config | sizes | dict(prior_layers=2, image=False, beta=5e-4, dataset=tiny_dataset)
    ckpt = torch.load(result["checkpoint"], weights_only=True)
    assert ckpt["step"] == 20 and ckpt["kind"] == "spirl_pretrain"
    fresh = sp.SkillModel(**config)
    fresh.load_state_dict(ckpt["model"])
    fresh.eval()
    states, actions = torch.randn(4, 30), torch.rand(4, 10, 9)
    torch.testing.assert_close(model.skill_prior(states), fresh.skill_prior(states))
    torch.testing.assert_close(model.encoder(actions), fresh.encoder(actions))
    assert not [f for f in os.listdir(os.path.dirname(result["checkpoint"])) if ".tmp" in f]


def test_resume_continues_exactly(tmp_path, tiny_dataset):
    straight = sp.train(tiny_args(tmp_path / "a", tiny_dataset, num_steps=20))
    sp.train(tiny_args(tmp_path / "b", tiny_dataset, num_steps=10))
    resumed = sp.train(  # no --run-name: the run continues in its own folder
        tiny_args(
            tmp_path / "c",
            tiny_dataset,
            num_steps=20,
            resume=str(tmp_path / "b" / "run" / "checkpoint.pt"),
            run_name=None,
        )
    )
    assert resumed["checkpoint"] == str(tmp_path / "b" / "run" / "checkpoint.pt")
    a = torch.load(straight["checkpoint"], weights_only=True)["model"]
    b = torch.load(resumed["checkpoint"], weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_prefetching_batches_trains_the_same_model_as_sampling_them_in_turn(tmp_path, tiny_dataset):
    prefetched = sp.train(tiny_args(tmp_path / "a", tiny_dataset, prefetch=True))
    in_turn = sp.train(tiny_args(tmp_path / "b", tiny_dataset, prefetch=False))
    a = torch.load(prefetched["checkpoint"], weights_only=True)
    b = torch.load(in_turn["checkpoint"], weights_only=True)
    torch.testing.assert_close(a["rng"]["sampler"], b["rng"]["sampler"])  # not one batch ahead
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], msg=key)


def test_ctrl_c_stops_at_the_next_step_with_a_checkpoint_that_resumes(tmp_path, tiny_dataset, monkeypatch, capsys):
    loss, calls = sp.skill_prior_loss, []

    def interrupted_at_step_7(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return loss(*args, **kwargs)

    monkeypatch.setattr(sp, "skill_prior_loss", interrupted_at_step_7)
    stopped = sp.train(tiny_args(tmp_path, tiny_dataset, num_steps=20))
    assert stopped["stopped"] and stopped["step"] == 7
    assert torch.load(stopped["checkpoint"], weights_only=True)["step"] == 7
    assert f"continue with --resume {stopped['checkpoint']}" in capsys.readouterr().out
    monkeypatch.setattr(sp, "skill_prior_loss", loss)
    assert sp.train(tiny_args(tmp_path, tiny_dataset, num_steps=None, resume=stopped["checkpoint"]))["step"] == 20


def test_resume_without_num_steps_keeps_the_runs_own_total(tmp_path, tiny_dataset):
    first = sp.train(tiny_args(tmp_path, tiny_dataset, num_steps=10, beta=0.1))
    again = sp.train(tiny_args(tmp_path, tiny_dataset, num_steps=None, resume=first["checkpoint"]))
    ckpt = torch.load(again["checkpoint"], weights_only=True)
    assert again["step"] == 10 and ckpt["config"]["num_steps"] == 10 and ckpt["config"]["beta"] == 0.1


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("skill_horizon", 5, "--skill-horizon (H) = 10, not 5"),
        ("latent_dim", 4, "--latent-dim (|Z|) = 10, not 4"),
        ("hidden_dim", 16, "--hidden-dim = 32, not 16"),
        ("seed", 7, "--seed = 1, not 7"),
    ],
)
def test_resume_rejects_other_sizes(tmp_path, tiny_dataset, field, value, words):
    first = sp.train(tiny_args(tmp_path, tiny_dataset, num_steps=5))
    with pytest.raises(SpirlError, match=words.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        sp.train(tiny_args(tmp_path, tiny_dataset, num_steps=10, resume=first["checkpoint"], **{field: value}))


def test_checkpoint_from_another_env_or_state_dim_is_rejected(tmp_path, tiny_dataset):
    first = sp.train(tiny_args(tmp_path, tiny_dataset, num_steps=5))
    ckpt = torch.load(first["checkpoint"], weights_only=True)
    ckpt["config"].update(env="maze", state_dim=4)
    other = str(tmp_path / "maze.pt")
    torch.save(ckpt, other)
    with pytest.raises(SpirlError, match="--env = maze, not kitchen: add --env maze to continue it"):
        sp.train(tiny_args(tmp_path, tiny_dataset, num_steps=10, resume=other))
    with pytest.raises(SpirlError, match="state dim = 4, not 30"):
        sp.load_skill_model(other, state_dim=30)


def test_corrupt_missing_or_foreign_checkpoint(tmp_path):
    with pytest.raises(SpirlError, match="does not exist"):
        sp.load_skill_model(str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(SpirlError, match="corrupt or truncated"):
        sp.load_skill_model(str(bad))
    torch.save({"format": 1, "config": {}, "model": {}}, tmp_path / "old.pt")  # no kind: not this script's
    with pytest.raises(SpirlError, match="is not a spirl_pretrain.py checkpoint"):
        sp.load_skill_model(str(tmp_path / "old.pt"))


def test_nan_stops_with_step_and_term_and_keeps_last_good_checkpoint(tmp_path, tiny_dataset):
    good = sp.train(tiny_args(tmp_path, tiny_dataset, num_steps=10))
    before = open(good["checkpoint"], "rb").read()
    huge = write_d4rl_file(tmp_path / "huge.hdf5", action_scale=1e30)  # finite data whose square overflows
    with pytest.raises(SpirlError) as err:
        sp.train(tiny_args(tmp_path, huge, num_steps=20, resume=good["checkpoint"]))
    message = str(err.value)
    assert "losses/reconstruction became inf at gradient step 11" in message
    assert "last good checkpoint kept" in message
    assert "\n" not in message
    assert open(good["checkpoint"], "rb").read() == before


@pytest.mark.parametrize(
    "field,value",
    [
        ("skill_horizon", 0),
        ("latent_dim", 0),
        ("batch_size", 0),
        ("lr", -1.0),
        ("val_fraction", 1.0),
        ("env", "kitchn"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, tiny_dataset, field, value):
    with pytest.raises(SpirlError) as err:
        sp.train(tiny_args(tmp_path, tiny_dataset, **{field: value}))
    assert "\n" not in str(err.value)
    assert not os.path.exists(tmp_path / "run" / "checkpoint.pt")


def test_bad_rollout_tasks_fail_before_training(tmp_path, tiny_dataset):
    with pytest.raises(SpirlError, match="bad kitchen task list"):
        sp.train(tiny_args(tmp_path, tiny_dataset, prior_rollouts=1, tasks=("microwave", "toaster")))
    assert not os.path.exists(tmp_path / "run")


def test_horizon_longer_than_every_episode(tmp_path, tiny_dataset):
    with pytest.raises(SpirlError, match="lower --skill-horizon"):
        sp.train(tiny_args(tmp_path, tiny_dataset, skill_horizon=45))


def run_cli(*argv, cwd):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "spirl_pretrain.py"), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    for argv, words in (
        (["--env", "kitchn"], "unknown env 'kitchn'"),
        (["--dataset", str(tmp_path / "missing.hdf5")], "does not exist"),
        (["--skill-horizon", "0", "--dataset", "x.hdf5"], "--skill-horizon must be at least 1"),
    ):
        proc = run_cli(*argv, cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr
    assert not os.path.exists(tmp_path / "runs")


def test_cli_help_lists_the_paper_settings(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for flag in ("--skill-horizon", "--latent-dim", "--beta", "--resume", "--prior-rollouts"):
        assert flag in proc.stdout


def test_prior_rollouts_run_in_the_env(tmp_path, tiny_dataset):
    args = tiny_args(tmp_path, tiny_dataset, num_steps=5, prior_rollouts=1, tasks=("microwave", "slide cabinet"))
    rollouts = sp.train(args)["prior_rollouts"]
    assert (
        rollouts["metric"] == "subtasks_completed" and len(rollouts["per_episode"]) == 1 and 0 <= rollouts["mean"] <= 2
    )
    assert set(rollouts["task_rates"]) == {"microwave", "slide cabinet"}


def test_pretraining_on_real_kitchen_data_lowers_validation_error(tmp_path, kitchen_complete_path):
    common = dict(
        hidden_dim=128,
        prior_layers=6,
        batch_size=64,
        val_fraction=0.1,
        log_every=50,
        val_every=1000,
        checkpoint_every=1000,
    )
    start = sp.train(tiny_args(tmp_path / "a", kitchen_complete_path, num_steps=0, **common))
    end = sp.train(tiny_args(tmp_path / "b", kitchen_complete_path, num_steps=400, **common))
    assert end["val"]["reconstruction_mse"] < 0.5 * start["val"]["reconstruction_mse"], (start, end)
    assert end["val"]["prior_nll"] < start["val"]["prior_nll"], (start, end)


def test_pretrain_device_defaults_to_cuda_when_there_is_one_and_a_missing_one_is_a_one_line_error():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert sp.resolve_args(sp.Args(env="kitchen"), None).device == expected
    if not torch.cuda.is_available():
        with pytest.raises(SpirlError, match="--device cuda"):
            sp.resolve_args(sp.Args(env="kitchen", device="cuda"), None)


def test_image_priors_see_their_frames_in_minus_one_to_one_and_older_models_keep_zero_to_one():
    torch.manual_seed(0)
    centred = sp.SkillPrior(4, 10, 16, 2, image=True, centred_frames=True).eval()
    plain = sp.SkillPrior(4, 10, 16, 2, image=True).eval()  # a model saved before: no centred_frames in its config
    plain.load_state_dict(centred.state_dict())
    observation = torch.cat([torch.randn(3, 4), torch.rand(3, sp.IMAGE_DIM)], dim=1)  # frames in [0, 1]
    shifted = torch.cat([observation[:, :4], observation[:, 4:] * 2 - 1], dim=1)
    for a, b in zip(centred(observation), plain(shifted)):
        torch.testing.assert_close(a, b)
    assert sp.SkillPrior(**centred.config).centred_frames  # the policy, a copy built from the config, keeps it
    config = sp.model_config(sp.resolve_args(sp.Args(env="maze", image=True, num_steps=1), None))
    assert config["centred_frames"] is True
