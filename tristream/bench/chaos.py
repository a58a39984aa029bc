"""``tristream bench chaos``: a real training run under a seeded schedule of faults, and what it left behind.

The run is ``tristream train`` in a session of its own, with ``runtime.audit_samples`` on, on the local
backend or on Ray. On Ray the drill first starts two Ray nodes on this machine (``ray_nodes.LoopbackCluster``:
a head with the inference and learner actors, and a node with the env worker actors) and the run joins them.
Once the roles are up (``<run>/roles.json``) a fault is injected every ``fault_every`` seconds (+-30%), drawn
from a seeded generator:

    kill:env_worker     SIGKILL a random env worker
    kill:inference      SIGKILL the inference worker
    stop:role           SIGSTOP a random role for runtime.timeout_s + 5 s (the backend must restart it)
    corrupt:checkpoint  truncate a file of the newest checkpoint
    remove:checkpoint   delete a file of an older checkpoint
    kill:node           (Ray) SIGKILL the env workers' node, whole; it is started again NODE_DOWN_S later, as a
                        node supervisor would, and the backend must wait for it and place the roles again

Every ``sample_every`` seconds it records the RSS (and its private part) and open file descriptors of the
driver or learner and of every role, and the run's blocks in /dev/shm. After ``seconds`` the driver gets SIGINT (it checkpoints and stops). Then:
samples trained twice (a segment key in two steps' ``audit_keys``) and steps that trained data older than
the lag bound must be 0, no block may be left in /dev/shm and no role process alive, every checkpoint is
checked against its manifest, and ``tristream train --resume`` must run one more step past the damage (its
held-out evaluation of the SFT and the final policy goes into the report). Last, a control run without
faults to the same global step (``_control``): its final policy against the drill's (equal weights in sync).
Writes ``chaos.json`` and ``chaos_memory.png`` (RSS per role over time, faults marked).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import yaml

from tristream.bench import ray_nodes
from tristream.provenance import publish, run_meta
from tristream.checkpoint import CheckpointError, verify_checkpoint
from tristream.runtime.shm import run_blocks

FAULTS = {"kill:env_worker": 0.35, "kill:inference": 0.2, "stop:role": 0.15, "corrupt:checkpoint": 0.15,
          "remove:checkpoint": 0.15}
RAY_FAULTS = {"kill:env_worker": 0.3, "kill:inference": 0.15, "stop:role": 0.15, "corrupt:checkpoint": 0.1,
              "remove:checkpoint": 0.15, "kill:node": 0.15}
BACKENDS = ("local", "ray")
NODE_DOWN_S = 10.0  # a crashed node is started again this long after the crash
# Ray drill: inference and learner on the head, env workers on the second node (the one that crashes).
HEAD_ARGS = ["--num-cpus=2", '--resources={"head": 2}']
NODE_ARGS = ["--num-cpus=2", '--resources={"sim": 2}']
RAY_PLACEMENT = ["ray.env_worker.resources.sim=1", "ray.inference.resources.head=1"]


def bench_chaos(preset: str, overrides: list[str], out_dir: str | Path, *, backend: str = "local",
                seconds: float = 3600.0, fault_every: float = 60.0, seed: int = 0, sample_every: float = 5.0,
                timeout_s: float = 20.0, control: bool = True) -> dict:
    # the drill's role timeout unless the overrides set one (a stopped role is restarted after it)
    timeout_s = float(next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("runtime.timeout_s=")),
                           timeout_s))
    if backend not in BACKENDS:
        raise ValueError(f"bench chaos drives the local or the ray backend (got runtime.backend={backend})")
    out = Path(out_dir).resolve()
    run_dir = out / "chaos_run"
    for folder in (run_dir, out / "control_run"):
        if folder.exists():
            raise ValueError(f"{folder} exists: bench chaos starts a fresh run; pass another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    fault_kinds = RAY_FAULTS if backend == "ray" else FAULTS
    cluster = None
    if backend == "ray":
        print("[chaos] starting two Ray nodes on 127.0.0.1 (a head, and a node for the env workers)", flush=True)
        cluster = ray_nodes.LoopbackCluster(out / "nodes", HEAD_ARGS, NODE_ARGS)
    try:
        return _drill(preset, overrides, out, run_dir, backend, cluster, fault_kinds, seconds=seconds,
                      fault_every=fault_every, seed=seed, sample_every=sample_every, timeout_s=timeout_s,
                      control=control)
    finally:
        if cluster is not None:
            cluster.close()


def _drill(preset, overrides, out, run_dir, backend, cluster, fault_kinds, *, seconds, fault_every, seed,
           sample_every, timeout_s, control) -> dict:
    placement = [f"ray.address={cluster.address}", *RAY_PLACEMENT] if cluster else []
    cmd = [sys.executable, "-m", "tristream.cli", "train", "--preset", preset, "--no-progress", *overrides,
           f"run.dir={out}", "run.name=chaos_run", f"runtime.backend={backend}", *placement,
           "runtime.audit_samples=true", "runtime.max_restarts=1000000", f"runtime.timeout_s={timeout_s}",
           "train.steps=1000000", "train.save_every=2"]
    print(f"workload: {' '.join(cmd[3:])}\nfaults: one every {fault_every:.0f} s (+-30%) from seed {seed} for "
          f"{seconds:.0f} s: {', '.join(fault_kinds)}; memory, descriptors and /dev/shm every {sample_every:.0f} s",
          flush=True)
    rng = np.random.default_rng(seed)
    faults, samples, conts, born, revive = [], [], [], {}, []
    log = out / "run.log"
    env = ray_nodes.ENV if cluster else {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    t_start, t_roles = time.monotonic(), None
    next_fault = next_sample = 0.0
    try:
        while proc.poll() is None:
            now = time.monotonic()
            roles = _roles(run_dir)
            if roles and t_roles is None:
                t_roles = now
                next_fault, next_sample = now + fault_every * rng.uniform(0.7, 1.3), now
                print(f"[chaos] RL roles up after {now - t_start:.0f} s; faults start", flush=True)
            if t_roles is not None and now - t_roles >= seconds:
                break
            for when, pid in [c for c in conts if c[0] <= now]:
                conts.remove((when, pid))
                _signal(pid, signal.SIGCONT)
            if revive and revive[0] <= now:  # the node's supervisor starts it again (in the background)
                revive.clear()
                threading.Thread(target=_restart_node, args=(cluster,), daemon=True).start()
            if t_roles is not None and now >= next_sample:
                samples.append(_sample(now - t_roles, roles, run_dir, born))
                next_sample = now + sample_every
            if t_roles is not None and now >= next_fault:
                fault = _inject(rng, fault_kinds, roles, run_dir, timeout_s, conts, cluster)
                if fault["kind"] == "kill:node" and fault["done"]:
                    revive.append(now + NODE_DOWN_S)
                fault["t"] = round(now - t_roles, 1)
                faults.append(fault)
                print(f"[chaos] t={fault['t']:.0f} s: {fault['kind']} {fault.get('target', '')}"
                      f"{'' if fault['done'] else ' (nothing to hit)'}", flush=True)
                next_fault = now + fault_every * rng.uniform(0.7, 1.3)
            time.sleep(0.2)
        ran_out = proc.poll() is not None
        if not ran_out:
            for _, pid in conts:
                _signal(pid, signal.SIGCONT)
            proc.send_signal(signal.SIGINT)  # the driver checkpoints and stops its roles
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    last_roles = _roles(run_dir)
    time.sleep(1.0)
    if cluster is not None and (cluster.worker is None or cluster.worker.poll() is not None):
        _restart_node(cluster)  # the resume below needs the node back
    final = _damage_newest(run_dir)  # what a crash while copying the run leaves: --resume must get past it
    if final:
        faults.append(final)
    result = {"benchmark": "chaos",
              "workload": {"command": cmd[3:], "backend": backend, "seconds": seconds, "fault_every_s": fault_every,
                           "seed": seed, "timeout_s": timeout_s, "faults": fault_kinds},
              "meta": run_meta(), "exit_code": rc, "stopped_by_itself": ran_out, "faults": faults, "samples": samples,
              **_audit(run_dir), "end": _end_state(run_dir, last_roles), "resume": _resume(run_dir, out)}
    result["memory"] = _memory_growth(samples)
    result["final_eval"] = _final_eval(run_dir)
    if control and result["resume"]["exit_code"] == 0:
        result["control"] = _control(cmd, out, run_dir, result["final_eval"])
    publish(result, out / "chaos.json", out / "chaos_memory.png", plot_memory, format_report(result),
            f"; the run's output: {log}")
    return result


def _roles(run_dir: Path) -> dict[str, int]:
    try:
        return json.loads((run_dir / "roles.json").read_text())
    except (OSError, ValueError):
        return {}


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _pick(rng, faults: dict[str, float]) -> str:
    return str(rng.choice(list(faults), p=list(faults.values())))


def _restart_node(cluster) -> None:
    try:
        cluster.start_worker()
        print("[chaos] the crashed node is running again", flush=True)
    except RuntimeError as e:  # the drill goes on: the run's restarts then fail and it stops, which the report shows
        print(f"[chaos] the crashed node could not be started again: {e}", flush=True)


def _inject(rng, faults: dict[str, float], roles: dict[str, int], run_dir: Path, timeout_s: float, conts: list,
            cluster=None) -> dict:
    kind = _pick(rng, faults)
    if kind == "kill:node":
        return {"kind": kind, "target": "the env workers' node", "done": cluster.crash_node()}
    env_workers = sorted(r for r in roles if r.startswith("env_worker"))
    if kind.startswith(("kill", "stop")):
        pool = {"kill:env_worker": env_workers, "kill:inference": ["inference"],
                "stop:role": env_workers + ["inference"]}[kind]
        target = str(rng.choice(pool))
        sig = signal.SIGKILL if kind.startswith("kill") else signal.SIGSTOP
        done = target in roles and _signal(roles[target], sig)
        if done and sig == signal.SIGSTOP:
            conts.append((time.monotonic() + timeout_s + 5.0, roles[target]))
        return {"kind": kind, "target": target, "done": done}
    ckpts = sorted(p for p in (run_dir / "checkpoints").glob("step_*") if p.is_dir())
    pool = ckpts[-1:] if kind == "corrupt:checkpoint" else ckpts[:-1]
    if not pool:
        return {"kind": kind, "done": False}
    ckpt = pool[int(rng.integers(len(pool)))]
    files = sorted(p for p in ckpt.iterdir() if p.is_file())
    victim = files[int(rng.integers(len(files)))]
    try:
        if kind == "corrupt:checkpoint":
            victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        else:
            victim.unlink()
    except OSError:  # rotated away meanwhile
        return {"kind": kind, "target": str(victim.relative_to(run_dir)), "done": False}
    return {"kind": kind, "target": str(victim.relative_to(run_dir)), "done": True}


def _damage_newest(run_dir: Path) -> dict | None:
    ckpts = sorted(p for p in (run_dir / "checkpoints").glob("step_*") if p.is_dir())
    if len(ckpts) < 2:
        return None
    victim = ckpts[-1] / "trainer.pt"
    victim.write_bytes(victim.read_bytes()[:100])
    return {"kind": "corrupt:checkpoint", "target": str(victim.relative_to(run_dir)), "done": True, "t": "end"}


def _proc_stats(pid: int) -> dict | None:
    """RSS, its private (anonymous) part and the shared-memory part in MB, and open file descriptors, of
    ``pid`` from /proc; None when it is gone. Shared pages (Ray's object store, /dev/shm blocks) count in RSS
    once touched, without being the process's own: a leak shows in the private part."""
    try:
        fields = {line.split(":")[0]: int(line.split()[1]) for line in open(f"/proc/{pid}/status")
                  if line.startswith(("VmRSS:", "RssAnon:", "RssShmem:"))}
        return {"rss_mb": fields["VmRSS"] / 1024, "anon_mb": fields.get("RssAnon", 0) / 1024,
                "shmem_mb": fields.get("RssShmem", 0) / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd"))}
    except (OSError, KeyError, ValueError):
        return None


def _shm_blocks(run_dir: Path) -> int:
    return len(run_blocks(run_dir))


def _sample(t: float, roles: dict[str, int], run_dir: Path, born: dict[int, float]) -> dict:
    """RSS, descriptors and age (seconds since first seen) of every role process; the run's /dev/shm blocks."""
    per_role = {}
    for role, pid in roles.items():
        stats = _proc_stats(pid)
        if stats:
            age = t - born.setdefault(pid, t)
            per_role[role] = {"pid": pid, **{k: round(v, 1) for k, v in stats.items() if k != "fds"},
                              "fds": stats["fds"], "age_s": round(age, 1)}
    return {"t": round(t, 1), "roles": per_role, "shm_blocks": _shm_blocks(run_dir)}


def _audit(run_dir: Path) -> dict:
    """From metrics.jsonl: global steps, restarts, segment keys trained more than once, segments received
    but not trained (lost to restarts), steps whose data were older than the lag bound."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip()] if (run_dir / "metrics.jsonl").exists() else []
    rows = [r for r in rows if r.get("phase") == "train"]
    runtime = yaml.safe_load((run_dir / "config.yaml").read_text())["runtime"]
    bound = runtime["max_policy_lag"] if runtime["mode"] == "async" else 0  # sync modes train fresh data only
    keys = Counter(k for r in rows for k in r.get("audit_keys", []))
    restarts = {k.split("/", 1)[1]: v for k, v in (rows[-1] if rows else {}).items() if k.startswith("restarts/")}
    return {"mode": runtime["mode"], "global_steps": int(rows[-1]["step"]) if rows else 0,
            "segments_trained": sum(keys.values()), "segments_trained_twice": sum(n - 1 for n in keys.values() if n > 1),
            "segments_dropped": int(sum(r.get("segments_dropped", 0) for r in rows)),
            "lag_bound": bound, "steps_beyond_lag_bound": sum(1 for r in rows if r.get("policy_lag_max", 0) > bound),
            "restarts": restarts}


def _end_state(run_dir: Path, roles: dict[str, int]) -> dict:
    alive = [r for r, pid in roles.items() if r != "driver" and _proc_stats(pid) is not None]
    checks = {}
    for ckpt in sorted(p for p in (run_dir / "checkpoints").glob("step_*") if p.is_dir()):
        try:
            verify_checkpoint(ckpt)
            checks[ckpt.name] = "ok"
        except CheckpointError as e:
            checks[ckpt.name] = str(e)
    return {"shm_blocks": _shm_blocks(run_dir), "role_processes_alive": alive, "checkpoints": checks}


def _resume(run_dir: Path, out: Path) -> dict:
    """``tristream train --resume`` for one more global step: it must get past any damaged checkpoint."""
    rows = _audit(run_dir)
    cmd = [sys.executable, "-m", "tristream.cli", "train", "--resume", str(run_dir), "--no-progress",
           f"train.steps={rows['global_steps'] + 1}"]
    log = out / "resume.log"
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=900).returncode
    text = log.read_text(errors="replace")
    line = next((ln for ln in text.splitlines() if "resuming from" in ln), "")
    return {"exit_code": rc, "resumed_from": line.split("resuming from ")[-1].split(" (")[0] if line else None,
            "skipped": [ln.split("skipping ", 1)[1] for ln in text.splitlines() if "warning: skipping" in ln]}


def _control(drill_cmd: list[str], out: Path, run_dir: Path, chaos_eval: dict) -> dict:
    """The undisturbed run to compare with: the drill's command without faults, to the global step the
    resumed drill ended at, from the same start (the drill's SFT policy when it ran the whole recipe). Its
    final policy against the drill's: the largest weight difference (0 in sync, whose rollouts rerun
    identically after a restart) and both held-out evaluations (async: equal within noise)."""
    from safetensors.torch import load_file

    from tristream.checkpoint import latest_checkpoint
    final = latest_checkpoint(run_dir)
    step = int(final.name.split("_")[-1])
    cmd = [*drill_cmd, "run.name=control_run", f"train.steps={step}", f"train.save_every={step}"]
    if (run_dir / "sft" / "policy.safetensors").exists():
        cmd.append(f"train.init={run_dir / 'sft'}")
    print(f"[chaos] control: an undisturbed run of the same settings to global step {step}", flush=True)
    log = out / "control.log"
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=4 * 3600).returncode
    result = {"command": cmd[3:], "global_steps": step, "exit_code": rc}
    ckpt = out / "control_run" / "checkpoints" / f"step_{step:06d}" / "policy.safetensors"
    if rc != 0 or not ckpt.exists():
        return result
    ours, theirs = load_file(final / "policy.safetensors"), load_file(ckpt)
    result["max_abs_weight_diff"] = max((ours[k].double() - theirs[k].double()).abs().max().item()
                                        for k in ours) if ours.keys() == theirs.keys() else None
    result["eval"] = _final_eval(out / "control_run").get("rl")
    result["chaos_eval"] = chaos_eval.get("rl")
    return result


def _final_eval(run_dir: Path) -> dict:
    """The held-out evaluation the resumed run ends with: SFT and final RL success from a recipe's
    summary.json, the final policy's alone from a run started from ``train.init`` (eval/rl.json); {} if none."""
    try:
        ev = json.loads((run_dir / "summary.json").read_text())["eval"]
    except (OSError, ValueError, KeyError):
        try:
            ev = {"rl": json.loads((run_dir / "eval" / "rl.json").read_text())}
        except (OSError, ValueError):
            return {}
    return {k: {"success": v["success"], "ci95": v["ci95"], "episodes": v["episodes"]} for k, v in ev.items()}


def _memory_growth(samples: list[dict], settled_s: float = 30.0) -> dict:
    """Per role: median RSS and private (anonymous) memory in the second fifth of the run (after warm-up) and
    in the last fifth, and their ratios, over processes at least ``settled_s`` old (a restarted role's fresh
    process is still loading torch and its policy: its RSS says nothing about a leak). Results written before
    the private part was sampled have RSS only."""
    series = defaultdict(list)
    for s in samples:
        for role, v in s["roles"].items():
            if v["age_s"] >= settled_s or role == "driver":
                series[role].append((s["t"], v["rss_mb"], v["fds"], v.get("anon_mb")))
    out = {}
    for role, pts in series.items():
        pts.sort()
        n = len(pts)
        early, late = pts[n // 5: max(n // 5 + 1, 2 * n // 5)], pts[-max(1, n // 5):]
        e, l_ = float(np.median([p[1] for p in early])), float(np.median([p[1] for p in late]))
        out[role] = {"rss_mb_after_warmup": e, "rss_mb_at_end": l_, "ratio": round(l_ / e, 3) if e else None,
                     "fds_max": max(p[2] for p in pts)}
        if all(p[3] is not None for p in pts):
            ea, la = float(np.median([p[3] for p in early])), float(np.median([p[3] for p in late]))
            out[role] |= {"anon_mb_after_warmup": ea, "anon_mb_at_end": la,
                          "anon_ratio": round(la / ea, 3) if ea else None}
    return out


def format_report(r: dict) -> str:
    done = [f for f in r["faults"] if f["done"]]
    kinds = Counter(f["kind"] for f in done)
    lines = [f"faults injected: {len(done)} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})",
             f"restarts: {sum(r['restarts'].values()):.0f} ({', '.join(f'{k} {v:.0f}' for k, v in r['restarts'].items())})",
             f"global steps completed: {r['global_steps']}; segments trained: {r['segments_trained']}",
             f"segments trained twice: {r['segments_trained_twice']}  (must be 0)",
             f"steps that trained data beyond the lag bound ({r['lag_bound']}): {r['steps_beyond_lag_bound']}  (must be 0)",
             f"/dev/shm blocks left: {r['end']['shm_blocks']}  (must be 0); role processes left: "
             f"{len(r['end']['role_processes_alive'])}  (must be 0)",
             "checkpoints: " + ", ".join(f"{k} {'ok' if v == 'ok' else 'damaged'}" for k, v in r["end"]["checkpoints"].items()),
             f"resume: exit {r['resume']['exit_code']}, from {r['resume']['resumed_from']}, skipped "
             f"{len(r['resume']['skipped'])} damaged checkpoint(s)"]
    if "segments_dropped" in r:  # a drill of an older tristream did not count them
        lines.insert(4, f"segments dropped (received, then lost to a restart: a rollout run again, an incomplete "
                        f"GRPO group, segments of a later step): {r['segments_dropped']}")
    ev = r.get("final_eval") or {}
    if "rl" in ev:
        lines.append("final policy on held-out episodes: " + ", ".join(
            f"{k} {v['success']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]" for k, v in ev.items())
            + f" ({ev['rl']['episodes']} episodes each)")
    c = r.get("control")
    if c:
        line = f"undisturbed control run to global step {c['global_steps']}: exit {c['exit_code']}"
        if c.get("max_abs_weight_diff") is not None:
            sync = r.get("mode") == "sync"
            line += (f"; largest weight difference from the drill's final policy {c['max_abs_weight_diff']:.3g}"
                     + ("  (sync: must be 0)" if sync else ""))
        if c.get("eval") and c.get("chaos_eval"):
            line += "; held-out success: drill {}, control {}".format(*(
                f"{v['success']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]" for v in (c["chaos_eval"], c["eval"])))
        lines.append(line)
    lines = [f"- {line}" for line in lines]  # one bullet per check: a list in Markdown, lines in a terminal
    private = all("anon_ratio" in m for m in r["memory"].values())
    lines += ["", "| role | RSS MB after warm-up | RSS MB at end | ratio |"
              + (" private MB after warm-up | private MB at end | ratio |" if private else "") + " max open fds |",
              "|---|---|---|---|" + ("---|---|---|" if private else "") + "---|"]
    for role, m in sorted(r["memory"].items()):
        anon = (f" {m['anon_mb_after_warmup']:.0f} | {m['anon_mb_at_end']:.0f} | {m['anon_ratio']} |"
                if private else "")
        lines.append(f"| {role} | {m['rss_mb_after_warmup']:.0f} | {m['rss_mb_at_end']:.0f} | {m['ratio']} |{anon} "
                     f"{m['fds_max']} |")
    return "\n".join(lines)


def plot_memory(r: dict, path: Path) -> Path:
    from tristream.metrics.plots import plt

    fig, ax = plt.subplots(figsize=(10, 4))
    series = defaultdict(list)
    for s in r["samples"]:
        for role, v in s["roles"].items():
            series[role].append((s["t"] / 60, v["rss_mb"]))
    for role, pts in sorted(series.items()):
        ax.plot(*zip(*pts), label=role)
    for f in r["faults"]:
        if f["done"] and f["t"] != "end":
            ax.axvline(f["t"] / 60, color="grey", alpha=0.25, lw=0.8)
    ax.set_xlabel("minutes since the RL roles started (grey: a fault)")
    ax.set_ylabel("RSS (MB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
