"""sweep.py: the grid, the skip/resume/run decision, and a real sweep on a local Ray head."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import sweep

TINY_SAC = ["--grid", "hidden=16", "layers=2", "batch-size=16", "warmup-steps=100", "eval-episodes=1", "log-every=50"]


def test_grid_names_runs_by_the_flags_that_vary_and_spells_booleans():
    grid = ("tau=0.005,0.01", "critic_bf16=true", "eval-every=1000")
    runs = sweep.plan_runs(sweep.Args(name="g", methods=("spirl", "ssp"), envs=("kitchen",), seeds=(1, 2), grid=grid))
    assert len(runs) == 2 * 2 * 2
    names = {r["name"] for r in runs}
    assert "kitchen__spirl__s2__tau0.01" in names and "kitchen__ssp__s1__tau0.005" in names
    flags = runs[0]["flags"]
    assert flags[:4] == ["--env", "kitchen", "--seed", "1"] and "--critic-bf16" in flags
    assert flags[flags.index("--eval-every") + 1] == "1000"
    for bad, match in [
        (dict(methods=("spirl", "ppo")), "unknown method"),
        (dict(envs=("antmaze",)), "unknown env"),
        (dict(grid=("seed=1,2",)), "sets --seed itself"),
        (dict(grid=("delta",)), "FLAG=V1"),
        (dict(methods=("spirl", "sac"), grid=("delta=1,5",)), "baselines/sac.py has no --delta"),
    ]:
        with pytest.raises(sweep.SweepError, match=match):
            sweep.plan_runs(sweep.Args(name="g", **bad))


def test_rerun_skips_finished_resumes_interrupted_and_extends(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = "--name d --methods sac --envs kitchen --seeds 1 2 3 --total-env-steps 600".split()
    base = tmp_path / "runs" / "d"
    (base / "kitchen__sac__s1").mkdir(parents=True)
    (base / "kitchen__sac__s1" / "checkpoint.pt").write_bytes(b"x")
    (base / "kitchen__sac__s1" / "sweep.json").write_text(json.dumps({"status": "finished", "env_steps": 600}))
    (base / "kitchen__sac__s2").mkdir()
    (base / "kitchen__sac__s2" / "checkpoint.pt").write_bytes(b"x")  # interrupted: a checkpoint, no outcome
    plan = sweep.main([*args, "--dry-run"])
    assert plan == {"kitchen__sac__s1": "skip", "kitchen__sac__s2": "resume", "kitchen__sac__s3": "run"}
    out = capsys.readouterr().out
    assert "--resume runs/d/kitchen__sac__s2/checkpoint.pt" in out and "--run-name d/kitchen__sac__s3" in out
    args[-1] = "900"  # more steps asked: the finished run is continued
    assert sweep.main([*args, "--dry-run"])["kitchen__sac__s1"] == "resume"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on 127.0.0.1 in the foreground (--block), so that terminating it ends its processes; the
    sweeps below share it. Token authentication is off for this private head (and the tests' drivers): a
    token left in ~/.ray by another Ray session would not match it."""
    port = free_port()
    temp_dir = tmp_path_factory.mktemp("ray")  # short enough for Ray's unix socket paths
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    options = ["--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2"]
    options += ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        head = subprocess.Popen([ray_cli, "start", *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until the head answers
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            head.terminate()
            pytest.fail("the Ray head did not start within 60 s")
        yield f"127.0.0.1:{port}"
        head.terminate()
        head.wait(timeout=60)


def test_sweep_runs_a_tiny_grid_on_a_ray_head_then_skips_it(ray_head, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = "--name tiny --methods sac --envs kitchen --seeds 1 2 --total-env-steps 300".split()
    args += [*TINY_SAC, "--address", ray_head, "--report-every", "2"]
    assert sweep.main(args) == {"kitchen__sac__s1": "finished", "kitchen__sac__s2": "finished"}
    for seed in (1, 2):
        run_dir = tmp_path / "runs" / "tiny" / f"kitchen__sac__s{seed}"
        status = json.loads((run_dir / "sweep.json").read_text())
        assert status["status"] == "finished" and status["rc"] == 0 and status["seconds"] > 0
        assert "--hidden 16 --layers 2 --batch-size 16" in status["command"]  # every --grid flag reached the run
        assert (run_dir / "policy.pt").is_file() and any(p.name.startswith("events.") for p in run_dir.iterdir())
    log_size = (tmp_path / "runs" / "tiny" / "kitchen__sac__s1" / "log.txt").stat().st_size
    assert sweep.main(args) == {"kitchen__sac__s1": "skip", "kitchen__sac__s2": "skip"}
    assert (tmp_path / "runs" / "tiny" / "kitchen__sac__s1" / "log.txt").stat().st_size == log_size  # nothing ran


def test_plot_script_draws_a_png_per_env_and_a_table_from_tiny_logs(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs"))
    import plot_fig4

    sweep_dir = tmp_path / "runs" / "fig"
    rng = np.random.default_rng(0)
    for env, metric in (("kitchen", "subtasks_completed"), ("maze", "success")):
        for method, level in (("spirl", 2.0), ("sac", 0.0)):
            for seed in (1, 2):
                writer = SummaryWriter(str(sweep_dir / f"{env}__{method}__s{seed}"))
                for step in range(280, 20_000, 280):
                    writer.add_scalar(f"charts/{metric}", level * step / 20_000 + rng.random() * 0.1, step)
                writer.add_scalar(f"charts/eval_{metric}", level, 20_000)
                writer.close()
    (sweep_dir / "notes").mkdir()  # not a run: ignored
    kept = tmp_path / "kept"
    plot_fig4.main([str(sweep_dir), "--out", str(tmp_path / "fig4"), "--bin", "2000", "--save-curves", str(kept)])
    for env in ("kitchen", "maze"):
        png = tmp_path / f"fig4_{env}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = (tmp_path / "fig4.md").read_text()
    # 1.9 ~ 2 x 0.95 + 0.05: the last 10%
    assert "| SPiRL (ours) | 2 | 19,880 | 1.9" in table
    assert "| SAC | 2 |" in table and "### Maze Navigation" in table
    with pytest.raises(SystemExit, match="no runs with logs"):
        plot_fig4.main([str(sweep_dir / "notes")])
    other = tmp_path / "runs" / "blocks"  # a second sweep: one table and a PNG per env over both
    writer = SummaryWriter(str(other / "block_stacking__spirl__s1"))
    for step in range(1000, 20_000, 1000):
        writer.add_scalar("charts/blocks_stacked", 1.0, step)
    writer.close()
    plot_fig4.main([str(sweep_dir), str(other), "--out", str(tmp_path / "both"), "--bin", "2000"])
    both = (tmp_path / "both.md").read_text()
    assert (
        "### Kitchen Environment" in both
        and "### Block Stacking" in both
        and "| SPiRL (ours) | 1 | 19,000 | 1.00" in both
    )
    assert (tmp_path / "both_block_stacking.png").stat().st_size > 10_000
    # Kept curves stand in for their runs: the same table from them alone, and a live run that has gone further
    # replaces its kept curve instead of counting twice.
    assert sorted(p.name for p in (kept / "fig").iterdir())[0] == "kitchen__sac__s1.json"
    plot_fig4.main([str(kept / "fig"), "--out", str(tmp_path / "b"), "--bin", "2000"])
    body = lambda name: (tmp_path / name).read_text().split("\n", 1)[1]  # noqa: E731 (the first line names the folders)
    assert body("b.md") == body("fig4.md")
    writer = SummaryWriter(str(sweep_dir / "kitchen__spirl__s1"))
    writer.add_scalar("charts/subtasks_completed", 4.0, 40_000)
    writer.close()
    plot_fig4.main([str(kept / "fig"), str(sweep_dir), "--out", str(tmp_path / "c"), "--bin", "2000"])
    assert "| SPiRL (ours) | 2 | 19,880 |" in (tmp_path / "c.md").read_text()  # min over seeds; s1 now at 40k
    assert plot_fig4.collect(str(sweep_dir))["kitchen__spirl__s1"]["steps"].max() == 40_000


def test_plot_script_draws_a_folder_given_a_variant_as_its_own_curve(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs"))
    import plot_fig4

    for folder, level in (("closed", 3.0), ("open", 1.0)):  # the same run names in two folders
        for seed in (1, 2):
            steps = list(range(280, 20_000, 280))
            curve = {"steps": steps, "values": [level] * len(steps), "eval_steps": [20_000], "eval_values": [level],
                     "seconds": 60.0}  # fmt: skip
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / f"kitchen__spirl__s{seed}.json").write_text(json.dumps(curve))
    kept = tmp_path / "kept"
    argv = [str(tmp_path / "closed"), f"{tmp_path / 'open'}=open-loop decoder", "--out", str(tmp_path / "f")]
    plot_fig4.main(argv + ["--save-curves", str(kept)])
    table = (tmp_path / "f.md").read_text()
    assert "| SPiRL (ours) | 2 | 19,880 | 3.00 ± 0.00 |" in table
    assert "| SPiRL (ours), open-loop decoder | 2 | 19,880 | 1.00 ± 0.00 |" in table
    assert "'" + f"{tmp_path / 'open'}=open-loop decoder" + "'" in table  # the command, quoted as typed
    # the kept curves keep their own names, in their own folders
    assert sorted(p.name for p in (kept / "open").iterdir()) == ["kitchen__spirl__s1.json", "kitchen__spirl__s2.json"]
    assert json.loads((kept / "open" / "kitchen__spirl__s1.json").read_text())["values"][0] == 1.0
    with pytest.raises(SystemExit, match="does not exist"):
        plot_fig4.main([f"{tmp_path / 'nowhere'}=x"])


def test_ctrl_c_stops_runs_with_a_checkpoint_and_a_rerun_resumes_them(ray_head, tmp_path, monkeypatch, capsys):
    """SIGINT to the sweep (Ctrl-C): the run saves a checkpoint at its episode's end, is recorded as
    stopped, not finished, and the same command then resumes it."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sweep.py")
    flags = "--name stop --methods sac --envs kitchen --seeds 1 --total-env-steps 100000 --workers 1".split()
    flags += [*TINY_SAC, "--address", ray_head]
    driver = subprocess.Popen(
        [sys.executable, script, *flags], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    run_dir = tmp_path / "runs" / "stop" / "kitchen__sac__s1"
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith("events.") for p in run_dir.glob("*")):
        time.sleep(0.5)  # the run is training once its tensorboard file exists
    time.sleep(1)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=180)
    assert driver.returncode == 130, out
    status = json.loads((run_dir / "sweep.json").read_text())
    assert status["status"] == "stopped" and (run_dir / "checkpoint.pt").is_file(), out
    assert not (run_dir / "policy.pt").exists()
    assert "stopped at env step" in (run_dir / "log.txt").read_text()
    monkeypatch.chdir(tmp_path)
    assert sweep.main([*flags, "--dry-run"]) == {"kitchen__sac__s1": "resume"}
    assert "--resume runs/stop/kitchen__sac__s1/checkpoint.pt" in capsys.readouterr().out


def test_a_run_under_a_blocked_sigint_still_stops_on_ctrl_c():
    """Ray starts sweep runs with SIGINT blocked; StopRequest unblocks it, and puts the mask back on exit."""
    import os
    import signal
    import time

    from envs.runs import StopRequest

    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs between bytecodes
            assert stop.requested
        assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
