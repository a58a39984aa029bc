"""Where Ray's throughput cost comes from (docs/cluster.md, "With the learner actor"): the bench's measured
run on the Ray backend with the learner in this process (the driver) vs in the learner actor, interleaved,
and the CPU seconds of every process of the machine during each run (sampled from /proc).

    python examples/ray_overhead.py train.init=runs/default/sft runtime.groups_per_worker=2 runtime.mode=async
    python examples/ray_overhead.py ... --where local,actor    # the local backend vs the learner actor

Roles of the local backend exit before the run returns, so /proc is sampled every 0.3 s and the last
reading of each process counts.
"""
import argparse
import collections
import functools
import os
import statistics
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
KINDS = ("raylet", "gcs_server", "dashboard", "log_monitor", "LearnerActor", "RoleActor", "multiprocessing")


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """pid -> (what it is, CPU seconds so far) for every process of the machine."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        kind = next((k for k in KINDS if k in cmd), "this process" if int(pid) == os.getpid() else "other")
        out[int(pid)] = (kind, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def sampled(fn):
    """Run ``fn()``; returns its result and the CPU seconds each kind of process spent meanwhile."""
    first, last, done = cpu_by_process(), {}, threading.Event()

    def update():  # a dying process loses its command line: keep what it was seen as
        for pid, (kind, cpu) in cpu_by_process().items():
            last[pid] = (last[pid][0] if kind == "other" and pid in last else kind, cpu)

    def poll():
        while not done.is_set():
            update()
            time.sleep(0.3)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        result = fn()
    finally:
        done.set()
        th.join()
    update()
    use = collections.defaultdict(float)
    for pid, (kind, cpu) in last.items():
        use[kind] += cpu - first.get(pid, (kind, 0.0))[1]
    return result, use


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="config overrides, as for tristream bench throughput")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--where", default="driver,actor", help="comma list of: local, driver (ray), actor (ray)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--measure-steps", type=int, default=3)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("MUJOCO_GL", "egl")
    import dataclasses

    import torch

    from tristream.bench.throughput import measure
    from tristream.config.scoped import load_cli_config
    from tristream.policies.io import load_policy
    from tristream.runtime.backends.ray_channels import connect
    from tristream.runtime.backends.ray_learner import run_in_learner_actor
    from tristream.policies.from_config import build_policy
    from tristream.envs.from_config import env_from_config

    cfg, _ = load_cli_config(args.preset, args.overrides)
    torch.set_num_threads(cfg.run.torch_threads)
    env = env_from_config(cfg.env)
    spec = env.spec
    env.close()
    init = (load_policy(cfg.train.init) if cfg.train.init else build_policy(cfg, spec)).state_dict()
    wheres = args.where.split(",")
    runs: dict[str, list[float]] = {w: [] for w in wheres}
    if any(w != "local" for w in wheres):
        connect(cfg.ray)
    for rep in range(args.repeats):
        for where in wheres:
            c = dataclasses.replace(cfg, runtime=dataclasses.replace(
                cfg.runtime, backend="local" if where == "local" else "ray"))
            run = (functools.partial(run_in_learner_actor, c, measure) if where == "actor" else measure)
            r, use = sampled(functools.partial(run, c, spec, init, 1, args.measure_steps))
            runs[where].append(r["env_steps_per_s"])
            print(f"repeat {rep + 1} {where:<6} {r['env_steps_per_s']:5.0f} env steps/s; CPU-s of the whole call: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in sorted(use.items(), key=lambda kv: -kv[1]) if v >= 0.05)
                  + f" (total {sum(use.values()):.1f})", flush=True)
    medians = {w: statistics.median(v) for w, v in runs.items()}
    print("medians: " + ", ".join(f"{w} {m:.0f}" for w, m in medians.items())
          + f"; {wheres[-1]} / {wheres[0]} = {medians[wheres[-1]] / medians[wheres[0]]:.2f}")


if __name__ == "__main__":
    main()
