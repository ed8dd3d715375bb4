"""Run a grid of experiments (method x env x seed x any flag) on Ray, one process per run.

    python sweep.py --name fig4 --methods spirl sac bc_sac flat_prior ssp --envs kitchen --seeds 1 2 3
    python sweep.py --name fig4 --methods spirl sac bc_sac flat_prior ssp --envs kitchen --seeds 1 2 3   # again:
        # finished runs are skipped, interrupted or failed ones continue from their checkpoint (--resume)
    python sweep.py --name delta --methods spirl --envs kitchen --seeds 1 2 --grid delta=1,5,10 eval-every=25000
    python sweep.py --name fig4 ... --address 10.0.0.5:6379    # an existing Ray cluster
    python sweep.py --name fig4 ... --dry-run                  # print what would run, run nothing

Each run is `python <method's script> --env E --seed S [--flag value ...] --run-name <name>/<run>` in its own
process, so it writes its own runs/<name>/<run>/ (tensorboard, checkpoint.pt) exactly as when started
by hand; its output goes to runs/<name>/<run>/log.txt and its outcome to runs/<name>/<run>/sweep.json.
Run names read <env>__<method>__s<seed>, plus __<flag><value> for every --grid flag with more than one
value. A progress summary is printed while runs go on; Ctrl-C stops every run at its next episode end
with a checkpoint (rerun the same command to continue; a second Ctrl-C stops waiting for them).

On a cluster (Slurm, cloud): start Ray on the nodes (`ray start --head` on one, `ray start --address
<head>:6379` on the others), with this repository and its venv at the same path on every node and runs/
on a shared filesystem, then pass --address. Ray only places the processes; nothing else changes.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, fields

import tyro

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = {  # method -> its script (the paper's Fig. 4 names)
    "spirl": "spirl_sac.py",
    "sac": "baselines/sac.py",
    "bc_sac": "baselines/bc_sac.py",
    "flat_prior": "baselines/flat_prior.py",
    "ssp": "baselines/ssp.py",
}
ENVS = ("kitchen", "maze", "block_stacking")


@dataclass
class Args:
    name: str
    """sweep name: its runs go to runs/<name>/<run>/"""
    methods: tuple[str, ...] = ("spirl",)
    """methods to run: spirl, sac, bc_sac, flat_prior, ssp"""
    envs: tuple[str, ...] = ("kitchen",)
    """envs to run each method on"""
    seeds: tuple[int, ...] = (1,)
    """seeds to run each (method, env) with"""
    total_env_steps: int | None = None
    """env steps per run (default: each script's own); a rerun with more extends finished runs"""
    grid: tuple[str, ...] = ()
    """more flags, FLAG=V1,V2,... each (--grid delta=1,5 eval-every=25000): every combination is run; a
    flag with one value is passed to every run and left out of the run names; true and false give the
    flag and its --no- form"""
    workers: int | None = None
    """runs at once (default: the machine's cores, or the cluster's, divided by --threads)"""
    threads: int = 1
    """torch threads (and Ray CPUs) per run"""
    address: str | None = None
    """address of an existing Ray cluster (host:port); default: start Ray on this machine"""
    report_every: float = 60.0
    """seconds between progress summaries"""
    dry_run: bool = False
    """print each run's action (run, resume, skip) and command, run nothing"""
    python: str = field(default_factory=lambda: sys.executable)
    """interpreter that runs the scripts (the same path on every node of a cluster)"""


class SweepError(Exception):
    """Bad sweep arguments: main() prints the message as one line."""


# ----------------------------------------------------------------------------- the grid


def parse_grid(grid: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """FLAG=V1,V2 -> (flag, [V1, V2]); flags written as the scripts spell them (dashes)."""
    axes = []
    for item in grid:
        flag, sep, values = item.partition("=")
        flag = flag.strip().lstrip("-").replace("_", "-")
        if not sep or not flag or not values:
            raise SweepError(f"--grid {item!r}: write FLAG=V1,V2,... (e.g. --grid delta=1,5)")
        if flag in ("env", "seed", "run-name", "resume", "total-env-steps", "threads"):
            raise SweepError(f"--grid {flag}: the sweep sets --{flag} itself; use its own flag")
        axes.append((flag, [v.strip() for v in values.split(",")]))
    return axes


def flag_args(flag: str, value: str) -> list[str]:
    if value.lower() in ("true", "false"):  # tyro booleans: --flag / --no-flag
        return [f"--{flag}" if value.lower() == "true" else f"--no-{flag}"]
    return [f"--{flag}", value]


def script_flags(method: str) -> set[str]:
    """The flags a method's script takes: the fields of its Args dataclass, spelled with dashes."""
    spec = importlib.util.spec_from_file_location(f"_sweep_{method}", os.path.join(REPO_ROOT, SCRIPTS[method]))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return {f.name.replace("_", "-") for f in fields(module.Args)}


def plan_runs(args: Args) -> list[dict]:
    """Every (method, env, seed, grid values) combination: its run name and fresh-start command."""
    for method in args.methods:
        if method not in SCRIPTS:
            raise SweepError(f"unknown method {method!r}; choose from {', '.join(SCRIPTS)}")
    for env in args.envs:
        if env not in ENVS:
            raise SweepError(f"unknown env {env!r}; choose from {', '.join(ENVS)}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name):
        raise SweepError(f"--name {args.name!r}: use letters, digits, '_', '-' or '.' (it names a folder)")
    if args.threads < 1 or (args.workers is not None and args.workers < 1):
        raise SweepError("--threads and --workers must be at least 1")
    axes = parse_grid(args.grid)
    for method in args.methods:
        known = script_flags(method)
        for flag, _ in axes:
            if flag not in known:
                raise SweepError(
                    f"--grid {flag}: {SCRIPTS[method]} has no --{flag} (see python {SCRIPTS[method]} "
                    f"--help); sweep methods that share the flag, or drop it"
                )
    runs = []
    grid = itertools.product(*[v for _, v in axes])
    for method, env, seed, values in itertools.product(args.methods, args.envs, args.seeds, grid):
        varied = [f"__{flag}{value}" for (flag, options), value in zip(axes, values) if len(options) > 1]
        name = f"{env}__{method}__s{seed}" + "".join(varied)
        flags = ["--env", env, "--seed", str(seed), "--threads", str(args.threads)]
        for (flag, _), value in zip(axes, values):
            flags += flag_args(flag, value)
        if args.total_env_steps is not None:
            flags += ["--total-env-steps", str(args.total_env_steps)]
        script = os.path.join(REPO_ROOT, SCRIPTS[method])
        runs.append({"name": name, "method": method, "env": env, "seed": seed, "script": script, "flags": flags})
    return runs


def decide(run: dict, args: Args) -> tuple[str, list[str]]:
    """What a run needs: ('skip', []) when it finished with at least the steps asked, ('resume', cmd)
    when it left a checkpoint (interrupted, failed, or to be extended), else ('run', cmd)."""
    run_dir = os.path.join("runs", args.name, run["name"])
    status = read_status(run_dir)
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    finished = status.get("status") == "finished"
    if finished and (args.total_env_steps is None or (status.get("env_steps") or 0) >= args.total_env_steps):
        return "skip", []
    base = [args.python, run["script"], *run["flags"]]
    if os.path.isfile(checkpoint):
        return "resume", [*base, "--resume", checkpoint]
    return "run", [*base, "--run-name", f"{args.name}/{run['name']}"]


def set_aside(run_dir: str):
    """A fresh start must not mix its logs with those of an earlier attempt that died before its first
    checkpoint: that folder is renamed to <run>.old<k>, not deleted."""
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        k = 1
        while os.path.exists(f"{run_dir}.old{k}"):
            k += 1
        os.rename(run_dir, f"{run_dir}.old{k}")
        print(f"moved the unfinished attempt without a checkpoint to {run_dir}.old{k}")


def read_status(run_dir: str) -> dict:
    try:
        with open(os.path.join(run_dir, "sweep.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_status(run_dir: str, status: dict):
    tmp = os.path.join(run_dir, f"sweep.json.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(status, f, indent=1)
    os.replace(tmp, os.path.join(run_dir, "sweep.json"))


# ----------------------------------------------------------------------------- one run (a Ray task)


def execute(command: list[str], cwd: str, run_dir: str, stop_path: str) -> dict:
    """Run one script to its end in its own process (its own session: a terminal's Ctrl-C reaches only
    the sweep). When the sweep is stopped, the file stop_path appears (on a cluster, runs/ is on a
    shared filesystem) and the run gets SIGTERM, on which it saves a checkpoint at its episode's end
    and exits. Returns its exit code, its duration and whether it completed (wrote policy.pt)."""
    start, signalled = time.time(), False
    with open(os.path.join(run_dir, "log.txt"), "a") as log:
        log.write(f"\n$ {shlex.join(command)}\n")
        log.flush()
        preexec_fn = term_with_parent if sys.platform == "linux" else None
        process = subprocess.Popen(
            command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec_fn
        )
        while process.poll() is None:
            try:
                if not signalled and os.path.exists(stop_path):
                    process.send_signal(signal.SIGTERM)
                    signalled = True
                time.sleep(1.0)
            except KeyboardInterrupt:  # a Ctrl-C that reached this worker: the stop file follows from the sweep
                pass
    policy = os.path.join(run_dir, "policy.pt")  # written only when a run reaches its last env step
    completed = os.path.isfile(policy) and os.path.getmtime(policy) >= start
    return {"rc": process.returncode, "seconds": time.time() - start, "completed": completed}


def term_with_parent():
    """Linux: the run gets SIGTERM (and checkpoints) if its Ray worker dies, instead of running on unseen."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def progress(run_dir: str) -> str:
    """The share of env steps done, from the latest tqdm 'done/total' in the run's log (the scripts print
    one every 30 s when not on a terminal)."""
    log_path = os.path.join(run_dir, "log.txt")
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.path.getsize(log_path) - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return "?"
    found = re.findall(r"(\d+)/(\d+) \[[^\]]*step/s", tail)  # the env-step bar, not a pretraining bar (it/s)
    if not found:
        return "starting"
    done, total = map(int, found[-1])
    return f"{100 * done // max(total, 1)}%"


def summary_line(started: float, states: dict, run_dirs: dict) -> str:
    counts = {k: sum(s == k for s in states.values()) for k in ("finished", "running", "queued", "failed", "stopped")}
    running = ", ".join(f"{name} {progress(run_dirs[name])}" for name, s in states.items() if s == "running")
    return (
        f"[{(time.time() - started) / 60:.0f} min] finished {counts['finished']}/{len(states)}, "
        f"running {counts['running']}"
        + (f" ({running})" if running else "")
        + f", queued {counts['queued']}, failed {counts['failed']}"
        + (f", stopped {counts['stopped']}" if counts["stopped"] else "")
    )


# ----------------------------------------------------------------------------- the sweep


def sweep(args: Args) -> dict:
    runs = plan_runs(args)
    actions = {run["name"]: decide(run, args) for run in runs}
    for run in runs:
        action, command = actions[run["name"]]
        shown = f": {shlex.join(command)}" if args.dry_run and command else ""
        print(f"{action:6s} {args.name}/{run['name']}{shown}")
    todo = [run for run in runs if actions[run["name"]][0] != "skip"]
    if args.dry_run or not todo:
        print(f"{len(runs) - len(todo)} of {len(runs)} runs already finished" + ("" if todo else "; nothing to do"))
        return {run["name"]: actions[run["name"]][0] for run in runs}

    import ray

    cwd = os.getcwd()
    if args.address:
        try:
            ray.init(address=args.address, log_to_driver=False)
        except Exception as e:
            raise SweepError(
                f"cannot reach a Ray cluster at {args.address} ({type(e).__name__}); start one with "
                f"`ray start --head` there, or drop --address to run on this machine"
            ) from None
        workers = args.workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // args.threads)
    else:
        workers = args.workers or max(1, (os.cpu_count() or 1) // args.threads)
        ray.init(num_cpus=workers * args.threads, include_dashboard=False, log_to_driver=False)
    if __name__ != "__main__":  # imported (tests, notebooks): ship execute() by value, workers need not import sweep
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    task = ray.remote(execute).options(num_cpus=args.threads, max_retries=0)
    print(
        f"{len(todo)} runs on {workers} workers ({args.threads} thread(s) each); logs in runs/{args.name}/<run>/log.txt"
    )

    states = {run["name"]: "queued" for run in todo}
    run_dirs = {run["name"]: os.path.abspath(os.path.join("runs", args.name, run["name"])) for run in todo}
    stop_path = os.path.abspath(os.path.join("runs", args.name, "STOP"))
    if os.path.exists(stop_path):  # left by an earlier sweep that was stopped
        os.remove(stop_path)
    pending, queue = {}, list(todo)
    started, last_report = time.time(), time.time()

    def collect(refs):
        for ref in refs:
            run = pending.pop(ref)
            result = ray.get(ref)
            name, rc = run["name"], result["rc"]
            states[name] = record_outcome(run_dirs[name], run, result, actions[name], args)
            log_hint = "" if rc == 0 else f" (exit {rc}; see runs/{args.name}/{name}/log.txt)"
            print(f"{states[name]} {args.name}/{name} after {result['seconds'] / 60:.1f} min{log_hint}", flush=True)

    # Ctrl-C only sets a flag, read after every ray.wait: a KeyboardInterrupt raised while Ray's own wait is running
    # can be lost inside it, and the sweep would then never stop its runs.
    interrupts = []
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGINT, lambda *_: interrupts.append(1)) if in_main_thread else None
    try:
        while queue or pending:
            while queue and len(pending) < workers:  # at most `workers` runs at once
                run = queue.pop(0)
                if actions[run["name"]][0] == "run":
                    set_aside(run_dirs[run["name"]])
                os.makedirs(run_dirs[run["name"]], exist_ok=True)
                ref = task.remote(actions[run["name"]][1], cwd, run_dirs[run["name"]], stop_path)
                pending[ref] = run
                states[run["name"]] = "running"
            collect(ray.wait(list(pending), num_returns=1, timeout=min(args.report_every, 1.0))[0])
            if interrupts:
                raise KeyboardInterrupt
            if time.time() - last_report >= args.report_every:
                print(summary_line(started, states, run_dirs), flush=True)
                last_report = time.time()
    except KeyboardInterrupt:
        print(
            f"\nstopping {len(pending)} run(s) at their episodes' end, with a checkpoint (Ctrl-C again: stop "
            f"waiting for them); rerun the same command to continue",
            flush=True,
        )
        open(stop_path, "w").close()
        interrupts.clear()
        try:
            while pending and not interrupts:
                collect(ray.wait(list(pending), num_returns=1, timeout=1.0)[0])
        finally:
            os.remove(stop_path)
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        ray.shutdown()
    print(summary_line(started, states, run_dirs))
    return {run["name"]: states.get(run["name"], "skip") for run in runs}


def record_outcome(run_dir: str, run: dict, result: dict, action: tuple[str, list[str]], args: Args) -> str:
    """Write the run's outcome to runs/<name>/<run>/sweep.json (a rerun reads it to skip or resume)."""
    outcome = "failed" if result["rc"] != 0 else "finished" if result["completed"] else "stopped"
    status = {
        "status": outcome,
        "rc": result["rc"],
        "seconds": round(result["seconds"], 1),
        "env_steps": args.total_env_steps,
        "action": action[0],
        "command": shlex.join(action[1]),
        "method": run["method"],
        "env": run["env"],
        "seed": run["seed"],
    }
    previous = read_status(run_dir)  # a resumed run's total time adds up over its pieces
    status["total_seconds"] = round(previous.get("total_seconds", 0.0) + result["seconds"], 1)
    os.makedirs(run_dir, exist_ok=True)
    write_status(run_dir, status)
    return outcome


def main(argv: list[str] | None = None):
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    try:
        return sweep(args)
    except SweepError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
