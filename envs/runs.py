"""Run apparatus shared by the training scripts: not part of SPiRL, and nothing here changes the science.

A reader learning the method can skip this file. It holds what every training script needs around its
algorithm: atomic checkpoints with one-line errors, the settings of a resumed run, Ctrl-C handling, the
NaN/inf check of the logged losses, and the tensorboard + progress-bar logger with CleanRL's tags.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import asdict, fields, replace

import torch

from envs.errors import SpirlError

CHECKPOINT_FORMAT = 2
# Settings that only steer a run (how long, how often it logs, where it writes); a resumed run may change
# them. Every other Args field defines the experiment: a resumed run keeps its own.
RUN_CONTROL = (
    "total_env_steps",
    "eval_every",
    "eval_episodes",
    "log_every",
    "checkpoint_every",
    "run_name",
    "resume",
    "threads",
    "capture_video",
    "device",
)
# Science flags a resumed run may switch on (not off): repairs that give the same values as long as the run is
# healthy, so a run that went wrong can be continued with one (best under a new --run-name, so its two parts stay
# apart). spirl_sac.py --straight-through-clamps: a policy past the clamps gets its gradient back.
REPAIRS = ("straight_through_clamps",)
# Science flags added after runs were saved: a run whose checkpoint predates one keeps the behaviour the code had
# then (not the new default), so resuming it does not change its experiment halfway.
PREDATING_RUNS = {
    "bootstrap_at_time_limit": True,
    "image": False,
    "sparse_reward": False,
    "straight_through_clamps": False,
}


def resolve_device(name: str | None) -> str:
    """--device: cuda when available and none is given, else cpu; a device this machine lacks is a one-line error."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SpirlError(f"--device {name}: not a torch device; use cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpirlError(f"--device {name}: torch finds no CUDA GPU here; drop the flag or use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise SpirlError(f"--device {name}: only cpu and cuda are supported")
    return name


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str, payload: dict, kind: str):
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save({"format": CHECKPOINT_FORMAT, "kind": kind, **payload}, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_checkpoint(path: str, kind: str, script: str) -> dict:
    """Load a checkpoint written by `script` (save_checkpoint with this `kind`), or a one-line error."""
    if not os.path.isfile(path):
        raise SpirlError(f"checkpoint {path} does not exist; pass runs/<run>/checkpoint.pt of a {script} run")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpirlError(f"cannot read checkpoint {path} ({type(e).__name__}); it is corrupt or truncated") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise SpirlError(f"{path} is not a {script} checkpoint; pass runs/<run>/checkpoint.pt of a {script} run")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise SpirlError(
            f"{path} was written by an older version of {script} (checkpoint format "
            f"{ckpt.get('format')}, this one reads {CHECKPOINT_FORMAT}); start a new run"
        )
    return ckpt


def resumed_args(args, ckpt: dict | None):
    """The settings of a run: `args` for a new run; for a resumed one, the run's own settings, with the
    run-control flags given now. A science flag set to something other than the run's value is an error."""
    if ckpt is None:
        return args
    names = {f.name for f in fields(args)}
    saved = {**{k: v for k, v in PREDATING_RUNS.items() if k in names}, **ckpt["args"]}
    defaults = type(args)()
    for f in fields(args):
        given = getattr(args, f.name)
        if f.name in REPAIRS and given is True:
            continue
        if f.name not in RUN_CONTROL and given != getattr(defaults, f.name) and given != saved[f.name]:
            raise SpirlError(
                f"--{f.name.replace('_', '-')} {given} differs from the resumed run's {saved[f.name]}; "
                f"drop the flag (a resumed run keeps its settings) or start a new run"
            )
    control = {name: getattr(args, name) for name in RUN_CONTROL if hasattr(args, name)}
    control["total_env_steps"] = args.total_env_steps or saved["total_env_steps"]
    repairs = {name: True for name in REPAIRS if getattr(args, name, False) is True}
    return replace(type(args)(**saved), **control, **repairs)


def run_folder(args, script: str) -> tuple[str, str]:
    """(run folder, its checkpoint path): the resumed run's own folder (or runs/<run_name> when one is given, to
    continue it apart), else runs/<run_name>."""
    if args.resume and not args.run_name:
        run_dir = os.path.dirname(os.path.abspath(args.resume))
    else:
        run_dir = os.path.join("runs", args.run_name or f"{args.env}__{script}__{args.seed}__{int(time.time())}")
    os.makedirs(run_dir, exist_ok=True)
    return run_dir, os.path.join(run_dir, "checkpoint.pt")


def check_finite(losses: torch.Tensor, terms: tuple[str, ...], first_step: int, ckpt_path: str, fix: str):
    """Stop on NaN/inf, naming the step and the loss term. `losses`: (steps, terms), checked once per log
    interval, so there is no host sync per step."""
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return
    row, col = (~finite).nonzero()[0].tolist()
    kept = f"last good checkpoint kept at {ckpt_path}" if os.path.exists(ckpt_path) else "no checkpoint was written"
    raise SpirlError(
        f"{terms[col]} became {losses[row, col].item()} at gradient step {first_step + row}; {fix} ({kept})"
    )


# ----------------------------------------------------------------------------- stopping


class StopRequest:
    """Ctrl-C / SIGTERM set a flag; the training loop finishes its episode, saves a checkpoint and exits.
    A second Ctrl-C stops at once. Use as a context manager: the previous handlers come back on exit."""

    def __enter__(self):
        self.requested = False
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        # A run started by sweep.py inherits Ray's signal mask, which blocks SIGINT (SigBlk 0x2 in /proc/<pid>/status):
        # `kill -INT` then never arrived. Unblocked here, Ctrl-C and kill -INT stop it like a run started by hand.
        self._blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping at the next safe point (a checkpoint will be saved); Ctrl-C again to abort", file=sys.stderr)

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, self._blocked)


# ----------------------------------------------------------------------------- logging


class RunLogger:
    """Tensorboard scalars with CleanRL's tags (charts/episodic_return, charts/<progress>, charts/SPS,
    losses/*) and a tqdm bar. A terminal gets a live bar; a log file (nohup ... > log) a line every 30 s.
    A resumed run hides what was logged after its checkpoint (tensorboard purges those steps)."""

    def __init__(self, run_dir: str, args, step: int, resumed: bool, loss_tags: tuple[str, ...]):
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.writer = SummaryWriter(run_dir, purge_step=step + 1 if resumed else None)
        self.writer.add_text("args", "\n".join(f"{k}: {v}" for k, v in asdict(args).items()))
        self.bar = tqdm(
            total=args.total_env_steps,
            initial=step,
            desc=os.path.basename(run_dir),
            unit="step",
            dynamic_ncols=True,
            mininterval=1 if sys.stderr.isatty() else 30,
        )
        # The bar shows the charts/ values of the update outputs (alpha, KL or entropy).
        self.loss_tags, self.loss_shown = loss_tags, [tag for tag in loss_tags if tag.startswith("charts/")]
        self.ckpt_path = os.path.join(run_dir, "checkpoint.pt")
        self.shown: dict = {}
        self.sps_time, self.sps_step = time.perf_counter(), step
        self.eval_s, self.learn_start, self.sps_last_step = 0.0, None, step

    def scalars(self, values: dict, step: int):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def losses(self, losses: list, updates: int, step: int):
        """Check the update outputs since the last log (`losses`: one tensor per gradient step, in `loss_tags`
        order) for NaN/inf (a one-line error), log their means, show some on the bar, clear the list."""
        if not losses:
            return
        stacked = torch.stack(losses)
        fix = "lower the learning rates or check the reward scale"
        check_finite(stacked, self.loss_tags, updates - len(losses) + 1, self.ckpt_path, fix)
        losses.clear()
        if self.learn_start is None:
            self.learn_start = (time.perf_counter(), step, self.eval_s)
        means = dict(zip(self.loss_tags, stacked.mean(0).tolist()))
        self.scalars(means, step)
        self.shown.update({tag.split("/")[-1]: f"{means[tag]:.3g}" for tag in self.loss_shown})

    def episode(self, episode_return: float, progress: dict, step: int, steps_done: int):
        """End of a training episode: its return and task progress; env steps/s every 10 s."""
        self.scalars({"charts/episodic_return": episode_return} | {f"charts/{k}": v for k, v in progress.items()}, step)
        self.bar.update(steps_done)
        self.sps_last_step = step
        now = time.perf_counter()
        if now - self.sps_time > 10:
            sps = (step - self.sps_step) / (now - self.sps_time)
            self.writer.add_scalar("charts/SPS", sps, step)
            self.shown["SPS"] = int(sps)
            self.sps_time, self.sps_step = now, step
        self.shown["return"] = f"{episode_return:g}"
        self.bar.set_postfix(self.shown, refresh=False)

    def evaluation(self, evaluate, step: int) -> dict:
        """Run `evaluate()` (-> {"return": ..., <progress>: ...}) and log it as charts/eval_*; its time is
        left out of the env steps/s."""
        start = time.perf_counter()
        result = evaluate()
        self.scalars({f"charts/eval_{k}": v for k, v in result.items()}, step)
        self.shown["eval"] = " ".join(f"{v:.2f}" for k, v in result.items() if k != "return")
        self.eval_s += time.perf_counter() - start
        self.sps_time, self.sps_step = time.perf_counter(), step
        return result

    @property
    def learning_sps(self) -> float | None:
        """Env steps/s from the first logged losses to now (the learning phase), evaluations excluded."""
        if self.learn_start is None:
            return None
        start_time, start_step, start_eval_s = self.learn_start
        return (self.sps_last_step - start_step) / max(
            time.perf_counter() - start_time - (self.eval_s - start_eval_s), 1e-9
        )

    def close(self):
        self.bar.close()
        self.writer.close()


class PretrainLogger:
    """Tensorboard scalars (losses/*, charts/samples_per_s, train/*, val/*) and a tqdm bar over gradient steps, as
    envs.runs.RunLogger does over env steps. A resumed run hides what was logged after its checkpoint."""

    def __init__(self, run_dir: str, args, step: int, resumed: bool, loss_tags: tuple[str, ...]):
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.writer = SummaryWriter(run_dir, purge_step=step + 1 if resumed else None)
        self.writer.add_text("args", "\n".join(f"{k}: {v}" for k, v in asdict(args).items()))
        interval = 1 if sys.stderr.isatty() else 30
        self.bar = tqdm(total=args.num_steps, initial=step, desc="pretrain", dynamic_ncols=True, mininterval=interval)
        self.ckpt_path, self.batch_size = os.path.join(run_dir, "checkpoint.pt"), args.batch_size
        self.shown, self.last, self.loss_tags = {}, (time.perf_counter(), step), loss_tags

    def scalars(self, values: dict, step: int):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def losses(self, losses: list, step: int):
        """Check the losses since the last log for NaN/inf (one-line error), log their means and samples/s."""
        if not losses:
            return
        stacked = torch.stack(losses)
        fix = "lower --lr or check the dataset's scale"
        check_finite(stacked, self.loss_tags, step - len(losses) + 1, self.ckpt_path, fix)
        losses.clear()
        (last_time, last_step), now = self.last, time.perf_counter()
        samples_per_s, self.last = (step - last_step) * self.batch_size / (now - last_time), (now, step)
        means = dict(zip(self.loss_tags, stacked.mean(0).tolist()))
        self.scalars(means | {"charts/samples_per_s": samples_per_s}, step)
        self.shown.update({tag.split("/")[1]: f"{means[tag]:.3g}" for tag in self.loss_tags[:3]})
        self.shown["samples_s"] = int(samples_per_s)
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(self.shown, refresh=False)

    def validation(self, validate, step: int) -> dict:
        """Run `validate()` (-> {"val": metrics, "train": metrics}) and log it as val/* and train/*."""
        metrics = validate()
        val, train = metrics["val"], metrics["train"]
        self.scalars({f"{split}/{k}": v for split, m in (("val", val), ("train", train)) for k, v in m.items()}, step)
        self.shown["val_rec"] = f"{val['reconstruction_mse']:.4g}"
        return metrics

    def close(self):
        self.bar.close()
        self.writer.close()


def check_compatible(config: dict, path: str, resuming: bool = False, **expected):
    """A one-line error when a skill-model checkpoint (spirl_pretrain.py's `config`) was trained for another env,
    size or horizon than `expected`; `resuming` (spirl_pretrain.py --resume) names the flag that continues it."""
    names = dict(state_dim="state dim", action_dim="action dim")  # no flags: the env sets them
    names |= dict(skill_horizon="--skill-horizon (H)", latent_dim="--latent-dim (|Z|)")
    for key, want in expected.items():
        have = config.get(key)
        if want is not None and have != want:
            name = names.get(key, f"--{key.replace('_', '-')}")
            fix = f"use a checkpoint trained with {name} {want}, or match the checkpoint's settings"
            if resuming:
                flag = f"--{key.replace('_', '-')}"
                setting = (flag if have else f"--no-{flag[2:]}") if isinstance(have, bool) else f"{flag} {have}"
                fix = f"add {setting} to continue it"
            raise SpirlError(f"checkpoint {path} has {name} = {have}, not {want}: {fix}")


# ----------------------------------------------------------------------------- flags and learner state


def check_flags(args, at_least_one: tuple = (), positive: tuple = (), non_negative: tuple = ()):
    """One-line errors for numeric flags out of range (None means "default" and passes)."""
    for names, ok, need in (
        (at_least_one, lambda v: v >= 1, "at least 1"),
        (positive, lambda v: v > 0, "above 0"),
        (non_negative, lambda v: v >= 0, "at least 0"),
    ):
        for name in names:
            value = getattr(args, name)
            if value is not None and not (ok(value) and math.isfinite(value)):
                raise SpirlError(f"--{name.replace('_', '-')} must be {need} (got {value})")


def learner_state(learner) -> dict:
    """Every network, optimiser and tensor of a learner dataclass, for a checkpoint."""
    state = {}
    for f in fields(learner):
        value = getattr(learner, f.name)
        if isinstance(value, torch.Tensor):
            state[f.name] = value.detach().clone()
        elif hasattr(value, "state_dict"):
            state[f.name] = value.state_dict()
    return state


def load_learner_state(learner, saved: dict):
    for name, value in saved.items():
        target = getattr(learner, name)
        if isinstance(target, torch.Tensor):
            with torch.no_grad():
                target.copy_(value)
        else:
            target.load_state_dict(value)


def replay_state(buffer) -> dict:
    """The filled part of a replay buffer (its FIELDS, in storage order): a checkpoint grows with the data, not
    with the capacity."""
    n = buffer.size
    return {"next": buffer.next, "size": n} | {name: getattr(buffer, name)[:n].clone() for name in buffer.FIELDS}


def load_replay_state(buffer, saved: dict):
    for name in buffer.FIELDS:
        if name not in saved and getattr(buffer, name).shape[1:] == (0,):
            continue  # a field of zero width (no frames) that replays saved before it existed do not have
        getattr(buffer, name)[: saved["size"]] = saved[name]
    buffer.size, buffer.next = saved["size"], saved["next"]


def cli(train, args_class, doc: str):
    """`python <script> --flags`: parse the flags into `args_class` with tyro, run `train`, and turn a SpirlError
    (bad input) into a one-line `error: ...` with exit status 1."""
    import tyro

    args = tyro.cli(args_class, description=doc.split("\n\n")[0])
    try:
        return train(args)
    except SpirlError as e:
        sys.exit(f"error: {e}")
