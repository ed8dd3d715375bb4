"""Benchmark: the two stages' speed on each device (--device cpu, and cuda where a GPU is found), in one run.

    python -m envs.kitchen_demos --episodes 60 --out data/kitchen-small --seed 3
    python -m envs.block_stacking_demos --episodes 200 --out data/bs-small --seed 3
    python bench/bench_device.py --kitchen-data data/kitchen-small --block-data data/bs-small

- pretraining samples/s (windows per second through one gradient step of eq. 4, batch 128): the kitchen's
  default model (closed-loop, states) and block stacking's image model with --decoder-frames (every step's two
  frames rendered on the CPU and read by the decoder's conv layers), each a short spirl_pretrain.py run; the median
  of charts/samples_per_s after the first log. Small datasets suffice: speed does not depend on their size.
- spirl_sac.py env steps/s while it learns (one gradient step per high-level transition, warm-up cut to 200
  transitions, evaluations excluded) on the kitchen with its shipped skill model.
The envs always run on the CPU; --device moves the networks, the replay buffer and the updates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import traceback
from dataclasses import replace

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import spirl_pretrain as sp  # noqa: E402
import spirl_sac as sac  # noqa: E402


def pretrain_samples_per_s(folder: str, device: str, steps: int, log_every: int, **flags) -> float:
    run = os.path.join(folder, f"pretrain_{device}_{flags['env']}")
    args = sp.Args(num_steps=steps, log_every=log_every, val_fraction=0.0, checkpoint_every=10**9, run_name=run)
    sp.train(replace(args, device=device, **flags))
    events = EventAccumulator(run).Reload()
    rates = [event.value for event in events.Scalars("charts/samples_per_s")]
    return statistics.median(rates[1:] or rates)  # the first log holds the start-up (allocation, first kernels)


def spirl_sac_steps_per_s(folder: str, device: str, steps: int) -> float:
    args = sac.Args(
        env="kitchen",  # its shipped skill model (closed-loop), as `python spirl_sac.py --env kitchen` uses
        total_env_steps=steps,
        warmup_transitions=200,
        log_every=50,
        eval_every=10**9,
        eval_episodes=1,
        checkpoint_every=10**9,
        run_name=os.path.join(folder, f"sac_{device}"),
        device=device,
    )
    sps = sac.train(args)["learning_sps"]
    if sps is None:
        raise ValueError(f"--env-steps {steps} ends within the warm-up (2,000 env steps): raise it")
    return sps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kitchen-data", required=True, help="a kitchen dataset folder (python -m envs.kitchen_demos)")
    parser.add_argument("--block-data", required=True, help="a block dataset folder (envs.block_stacking_demos)")
    parser.add_argument("--kitchen-steps", type=int, default=600, help="gradient steps of the kitchen pretraining")
    parser.add_argument("--block-steps", type=int, default=60, help="gradient steps of the block image pretraining")
    parser.add_argument("--env-steps", type=int, default=4_000, help="env steps per spirl_sac.py run")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "device.json"))
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    results = {
        "command": "python bench/bench_device.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, GPU {gpu}, torch {torch.__version__}",
    }
    kitchen = dict(env="kitchen", dataset=args.kitchen_data, closed_loop=True)
    block = dict(env="block_stacking", dataset=args.block_data, image=True, closed_loop=True, decoder_frames=True)
    block |= dict(beta=1e-4)
    with tempfile.TemporaryDirectory() as folder:  # absolute: runs/<run_name> becomes the folder itself
        for device in devices:
            measurements = {
                "pretrain_kitchen_samples_per_s": lambda: pretrain_samples_per_s(
                    folder, device, args.kitchen_steps, 50, **kitchen
                ),
                "pretrain_block_frames_samples_per_s": lambda: pretrain_samples_per_s(
                    folder, device, args.block_steps, 10, **block
                ),
                "spirl_sac_kitchen_env_steps_per_s": lambda: spirl_sac_steps_per_s(folder, device, args.env_steps),
            }
            results[device] = {}
            for name, measure in measurements.items():
                try:  # one failing measurement still leaves the others (a GPU lease is short)
                    results[device][name] = measure()
                except Exception as error:  # noqa: BLE001
                    traceback.print_exc()
                    results[device][name] = f"failed: {type(error).__name__}: {error}"
                torch.set_num_threads(os.cpu_count() or 1)  # train() may have set its own
    print()
    for device in devices:
        for name, value in results[device].items():
            print(f"{device}: {name} {value if isinstance(value, str) else round(value)}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
