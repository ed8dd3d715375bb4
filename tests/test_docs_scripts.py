"""The plot scripts in docs/ stop with one `error: ...` line, never a traceback, on a wrong path.

One case per script runs it as a user would (a subprocess), so the test sees exactly what the
terminal shows; the other cases call the script's main(argv) in this process, which skips the
second or so of importing torch per case: main must exit with a one-line `error: ...` message
(what Python then prints to stderr) and print nothing else to stderr.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import DOCS, ROOT, docs_script

SCRIPTS = ("plot_sac", "plot_pretrain", "plot_fig4", "plot_maze_exploration", "plot_block_stacking")
SCRIPTS += ("plot_kitchen_rollout", "plot_maze_training", "plot_cleanrl_check")
CHECKPOINT_SCRIPTS = (
    "plot_maze_exploration",
    "plot_maze_training",
    "plot_block_stacking",
    "plot_kitchen_rollout",
)  # the others read tensorboard folders
KITCHEN_SKILLS = os.path.join(ROOT, "checkpoints", "kitchen-scripted-skills.pt")  # shipped; wrong for these two


def script_error(name: str, args: list[str], capfd) -> str:
    """The one-line error of docs/<name>.py main(args), run in this process."""
    module = docs_script(name)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        module.main(args)
    message, stderr = exit_info.value.code, capfd.readouterr().err
    assert isinstance(message, str) and stderr == "", (message, stderr)  # a string: exit status 1, printed to stderr
    assert len(message.splitlines()) == 1 and message.startswith("error: "), message
    return message


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_missing_path_is_one_line_on_stderr_and_no_traceback(name, tmp_path):
    missing = str(tmp_path / "nonexistent")
    done = subprocess.run([sys.executable, os.path.join(DOCS, f"{name}.py"), missing], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert missing in lines[0] and "does not exist" in lines[0] and "pass" in lines[0], lines[0]


@pytest.mark.parametrize("name", SCRIPTS)
def test_an_empty_folder_is_a_one_line_error(name, tmp_path, capfd):
    message = script_error(name, [str(tmp_path)], capfd)
    assert str(tmp_path) in message and "pass" in message


@pytest.mark.parametrize("name", CHECKPOINT_SCRIPTS)
def test_an_unreadable_or_wrong_checkpoint_is_a_one_line_error(name, tmp_path, capfd):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    message = script_error(name, [str(tmp_path / "checkpoint.pt")], capfd)
    assert "cannot read" in message and "pass" in message
    message = script_error(name, [str(tmp_path)], capfd)  # a run folder: pass its checkpoint.pt
    assert f"pass {tmp_path / 'checkpoint.pt'}" in message
    message = script_error(name, [KITCHEN_SKILLS], capfd)  # a checkpoint, but not one this script can use
    assert KITCHEN_SKILLS in message and "pass" in message


def test_a_wrong_run_folder_names_the_right_script_or_folder(tmp_path, capfd):
    from torch.utils.tensorboard import SummaryWriter

    for run, tag in (("pretrain_run", "losses/total"), ("sac_run", "charts/episodic_return")):
        writer = SummaryWriter(str(tmp_path / run))
        writer.add_scalar(tag, 1.0, 1)
        writer.close()
    assert "docs/plot_pretrain.py" in script_error("plot_sac", [str(tmp_path / "pretrain_run")], capfd)
    assert "docs/plot_sac.py" in script_error("plot_pretrain", [str(tmp_path / "sac_run")], capfd)
    assert "pass one of its run folders" in script_error("plot_sac", [str(tmp_path)], capfd)  # runs/ itself
    (tmp_path / "sac_run" / "checkpoint.pt").write_bytes(b"")  # a file in a run folder: pass the folder
    assert f"pass {tmp_path / 'sac_run'}" in script_error(
        "plot_sac", [str(tmp_path / "sac_run" / "checkpoint.pt")], capfd
    )
    one_run = tmp_path / "sweep" / "kitchen__spirl__s1"  # one run of a sweep: pass the sweep
    one_run.mkdir(parents=True)
    assert f"pass its parent folder {tmp_path / 'sweep'}" in script_error("plot_fig4", [str(one_run)], capfd)


def test_the_cleanrl_check_tables_both_implementations_and_reads_its_kept_curves_back(tmp_path, capfd):
    from torch.utils.tensorboard import SummaryWriter

    module = docs_script("plot_cleanrl_check")
    runs = {  # run folder -> returns logged at env steps 100, 200, ..., 1000
        "Hopper-v5__sac__s1": np.arange(10.0),
        "Hopper-v5__sac__s2": np.arange(10.0) + 2,
        "cleanrl/runs/Hopper-v5__sac_continuous_action__1__1700000000": np.full(10, 5.0),
        "not_a_run__sac__s1": np.zeros(10),  # neither naming scheme: ignored
    }
    for name, returns in runs.items():
        writer = SummaryWriter(str(tmp_path / "gym" / name))
        for step, value in zip(range(100, 1001, 100), returns):
            writer.add_scalar("charts/episodic_return", value, step)
        if name.startswith("cleanrl"):  # an episode ending 10 steps past the budget joins the last bin
            writer.add_scalar("charts/episodic_return", 5.0, 1010)
        writer.close()
    module.main([str(tmp_path / "gym"), "--out", str(tmp_path / "out"), "--bin", "500", "--save-curves",
                 str(tmp_path / "kept")])  # fmt: skip
    text = (tmp_path / "out.md").read_text()
    # the last 10% of 1000 env steps: the episodes at 900 and 1000 -> 8.5 and 10.5, mean 9.5 +- 1
    assert "| Hopper-v5 | baselines/sac.py (this project) | 2 | 1,000 | 10 ± 1 (8, 10) | 3 / 8 |" in text, text
    assert "| Hopper-v5 | CleanRL sac_continuous_action.py | 1 | 1,010 | 5 (5) | 5 / 5 |" in text, text
    assert "mean per 500 env steps" in text and (tmp_path / "out.png").exists() and "not_a_run" not in text
    kept = sorted(os.listdir(tmp_path / "kept" / "gym_check"))
    assert kept == ["Hopper-v5__cleanrl__s1.json", "Hopper-v5__sac__s1.json", "Hopper-v5__sac__s2.json"]
    module.main([str(tmp_path / "kept" / "gym_check"), "--out", str(tmp_path / "again"), "--bin", "500"])
    assert (tmp_path / "again.md").read_text() == text
