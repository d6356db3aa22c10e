"""ReachCube 84x84 (default randomisation) frames/s and env steps/s, each by the wall clock and
by this process's CPU time, plus the involuntary and voluntary context switches of the run.

The loops are those of :func:`sim2real.bench.bench_render` (render with a redraw every 50
frames; then env steps). On a shared machine the wall-clock rate moves with other processes'
load while the CPU-time rate measures the work per frame; both are printed so that two trees
run alternately (A B A B ...) can be compared pair by pair on the one that is not noise. Only
the env id is used, so the script runs unchanged against an older tree's code:

    python benchmarks/render_cpu.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import gymnasium as gym


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0, help="total timed seconds")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import sim2real.envs  # noqa: F401  (registers ids)

    env = gym.make(
        "Sim2Real/ReachCube-v0", randomization="default", image_size=(84, 84), labels="none"
    )
    core = env.unwrapped
    env.reset(seed=0)
    env.action_space.seed(0)
    per = args.seconds / (2 * args.repeats)
    rates: dict[str, list[float]] = {k: [] for k in ("fps_wall", "fps_cpu", "sps_wall", "sps_cpu")}
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(args.repeats):
        n, w0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - w0 < per:
            if n % 50 == 0:
                core._redraw()
            core._render()
            n += 1
        rates["fps_wall"].append(n / (time.perf_counter() - w0))
        rates["fps_cpu"].append(n / (time.process_time() - c0))
        n, w0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - w0 < per:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                env.reset()
            n += 1
        rates["sps_wall"].append(n / (time.perf_counter() - w0))
        rates["sps_cpu"].append(n / (time.process_time() - c0))
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    env.close()
    print(
        " ".join(f"{k} {statistics.median(v):.1f}" for k, v in rates.items())
        + f" involuntary_switches {ru1.ru_nivcsw - ru0.ru_nivcsw}"
        + f" voluntary_switches {ru1.ru_nvcsw - ru0.ru_nvcsw}"
        + f" threads {len(os.listdir('/proc/self/task'))}"
    )


if __name__ == "__main__":
    main()
