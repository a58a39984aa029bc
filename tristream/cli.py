"""tristream command line: collect | sft | dpo | train | eval | bench | plan | report | env | config.

Every command takes config overrides as ``key.sub=value`` words (``tristream config keys`` lists them
all, with types, defaults and help) and ``--preset NAME`` (a YAML file in tristream/config/presets/ or a
path). The resolved config is saved into every run directory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
#: commands whose work runs in this one process (no roles beside it), where OpenMP's default wait policy
#: is right: waking a sleeping thread for every small op would make LM decoding ~2x slower
SOLO_COMMANDS = (("sft",), ("dpo",), ("bench", "decode"))


def _omp_wait_policy(argv: list[str]) -> None:
    """Roles share few cores: OpenMP threads that spin while idle steal them from the other roles
    (measured: a learner step 50-100x slower beside a busy process), so every command that starts roles
    makes idle threads sleep. Must run before torch loads OpenMP; a value the user set is kept."""
    if not any(tuple(argv[:len(c)]) == c for c in SOLO_COMMANDS):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# runtime.backend=ray: the learner actor's lines (placement, one per global step) reach this terminal
# through Ray's log forwarding, which by default folds lines it deems repeated and colours its prefix.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
if not sys.stdout.isatty():
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no escape codes in redirected logs

OVERRIDES_HELP = "config overrides key.sub=value (list all: tristream config keys), e.g. algo.lr=3e-4 rollout.num_envs=16"


def _load(args):
    from tristream.config.scoped import load_cli_config
    cfg, note = load_cli_config(args.preset, args.overrides)
    if note:
        print(f"[tristream] {note}", file=sys.stderr)
    return cfg


def _run_config(path: Path) -> Path | None:
    """The config.yaml of the run a policy folder belongs to: RUN/, RUN/sft/ or RUN/checkpoints/step_N/."""
    for d in (path, path.parent, path.parent.parent):
        if (d / "config.yaml").is_file():
            return d / "config.yaml"
    return None


def _load_saved(cfg_path: Path, overrides, hint: str = ""):
    """A run's resolved config.yaml with command-line overrides on top; a bad file is an error naming it."""
    import yaml

    from tristream.config import Config, ConfigError, config_from_dict
    from tristream.config.loader import apply_overrides
    try:
        return config_from_dict(Config, apply_overrides(Config, yaml.safe_load(cfg_path.read_text()), overrides))
    except ConfigError as e:
        raise ConfigError(f"{cfg_path}: {e}{hint}") from e


def _eval_config(args, path: Path):
    """Without --preset, a policy of a run is evaluated on the run's own settings (its env and tasks)."""
    cfg_path = None if args.preset else _run_config(path)
    if cfg_path is None:
        args.preset = args.preset or "default"
        return _load(args)
    cfg = _load_saved(cfg_path, args.overrides, " (pass --preset NAME to evaluate with a preset instead)")
    print(f"[tristream] evaluation settings from {cfg_path} (--preset NAME to use a preset instead)")
    return cfg


def _env_spec(cfg):
    from tristream.envs.from_config import env_from_config
    env = env_from_config(cfg.env)
    spec = env.spec
    env.close()
    return spec


def _new_run_dir(cfg) -> Path:
    base = Path(cfg.run.dir) / cfg.run.name
    run_dir, i = base, 1
    while run_dir.exists() and any(run_dir.iterdir()):
        run_dir = base.with_name(f"{base.name}-{i}")
        i += 1
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def cmd_train(args) -> int:
    from tristream.config import save_config
    if args.resume:
        run_dir = Path(args.resume)
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.exists():
            raise SystemExit(f"error: {cfg_path} not found: is {run_dir} a tristream run directory?")
        cfg = _load_saved(cfg_path, args.overrides)
    else:
        cfg = _load(args)
        run_dir = _new_run_dir(cfg)
    print(f"[tristream] run directory: {run_dir}")
    spec = _env_spec(cfg)
    if cfg.train.init:  # RL from a given policy; a resumed recipe run (no train.init) continues its stages
        from tristream.workflow.evaluate import evaluate, format_table
        from tristream.workflow.rl import rl_train
        save_config(cfg, run_dir / "config.yaml")
        policy = rl_train(cfg, run_dir, spec, init=cfg.train.init or None, resume=bool(args.resume),
                          progress=not args.no_progress)
        result = evaluate(policy, cfg, out_dir=run_dir / "eval", label="rl")
        print(format_table({"rl": result}))
        (run_dir / "eval").mkdir(parents=True, exist_ok=True)  # (no videos: evaluate wrote nothing there)
        (run_dir / "eval" / "rl.json").write_text(json.dumps(result, indent=2))
        print(f"[tristream] wrote {run_dir / 'eval' / 'rl.json'}")
        return 0
    from tristream.workflow.recipe import run_recipe
    run_recipe(cfg, run_dir, spec, resume=bool(args.resume), progress=not args.no_progress)
    return 0


def cmd_collect(args) -> int:
    from tristream.workflow.collect import collect
    cfg = _load(args)
    stats = collect(cfg, args.out, progress=not args.no_progress)
    print(f"[tristream] wrote {stats['episodes']} episodes to {args.out} "
          f"(expert success {stats['expert_success']:.2f} over {stats['tried']} tries)")
    return 0


def cmd_sft(args) -> int:
    from tristream.config import save_config
    from tristream.metrics.tracker import Tracker
    from tristream.workflow.sft import sft
    cfg = _load(args)
    is_lm = cfg.policy.name == "lm"  # a language policy: SFT on cfg.lm.task, no demonstrations
    if not is_lm and not args.data:
        raise ValueError("sft of a VLA needs --data DEMOS.hdf5 (or policy.name=lm / --preset lm_tiny for a language policy)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    tracker = Tracker(out)
    if is_lm:
        from tristream.workflow.language import language_sft
        language_sft(cfg, out, tracker=tracker, progress=not args.no_progress)
    else:
        sft(cfg, args.data, out, _env_spec(cfg), tracker=tracker, progress=not args.no_progress)
    tracker.close()
    print(f"[tristream] SFT {'language ' if is_lm else ''}policy saved to {out}")
    return 0


def cmd_dpo(args) -> int:
    from tristream.config import save_config
    from tristream.metrics.tracker import Tracker
    from tristream.workflow.language import language_dpo
    cfg = _load(args)
    if cfg.dpo.steps < 1:
        raise ValueError(f"dpo.steps is {cfg.dpo.steps} in this config: set it, e.g. dpo.steps=100")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    tracker = Tracker(out)
    language_dpo(cfg, args.init, out, pairs=args.data, tracker=tracker, progress=not args.no_progress)
    tracker.close()
    print(f"[tristream] DPO language policy saved to {out}")
    return 0


def cmd_eval(args) -> int:
    from tristream.policies.io import load_policy
    from tristream.workflow.evaluate import evaluate, format_table
    path = Path(args.checkpoint)
    cfg = _eval_config(args, path)
    if (path / "lm.json").exists() and not (path / "policy.json").exists():
        # an LM of an arithmetic lm.task: held-out exact match, fp32 and quantized (an LM trained on a text
        # env is also saved as a policy, evaluated below on the env's held-out split)
        from tristream.lm.train import evaluate_checkpoint
        group = cfg.lm.qat_group_size if any(o.startswith("lm.qat_group_size=") for o in args.overrides) else None
        result = evaluate_checkpoint(path, problems=args.episodes, group_size=group)
        print(f"held-out exact match ({result['heldout_problems']} problems, quantization group size "
              f"{result['group_size']}): " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()
                                                      if isinstance(v, float)))
        out = Path(args.out) if args.out else path / "eval"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.label}.json").write_text(json.dumps(result, indent=2))
        print(f"[tristream] wrote {out / f'{args.label}.json'}")
        return 0
    if (path / "checkpoints").is_dir():  # a run directory: its newest readable checkpoint
        from tristream.checkpoint import latest_checkpoint
        path = latest_checkpoint(path)
    policy = load_policy(path)
    out = Path(args.out) if args.out else path / "eval"
    result = evaluate(policy, cfg, episodes=args.episodes, out_dir=out, label=args.label)
    print(format_table({args.label: result}))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.label}.json").write_text(json.dumps(result, indent=2))
    print(f"[tristream] results and GIFs in {out}")
    return 0


def cmd_bench(args) -> int:
    cfg = _load(args)
    if args.what == "env":
        from tristream.envs.throughput import env_only_throughput
        from tristream.envs.from_config import env_kwargs
        r = env_only_throughput(cfg.env.name, num_envs=args.num_envs, steps=args.steps, **env_kwargs(cfg.env))
        print(f"workload: env {cfg.env.name}, {args.num_envs} envs in one process, {args.steps} steps per env, "
              f"zero-cost (random) policy, images {cfg.env.image_size}x{cfg.env.image_size}")
        print(f"env-only throughput: {r['env_steps_per_s']:.0f} env steps/s ({r['seconds']:.1f} s)")
        for what in ("step", "reset"):
            t = r[f"{what}_ms"]
            if t["n"]:
                print(f"{what} time over {t['n']} calls: median {t['median']:.2f} ms, p90 {t['p90']:.2f}, "
                      f"p99 {t['p99']:.2f}, max {t['max']:.2f}; log-sigma {t['log_sigma']:.2f}")
        return 0
    if args.what == "algos":
        from tristream.bench.algos import bench_algos, parse_regimes
        losses = tuple(x.strip() for x in args.losses.split(",")) if args.losses else None
        done = bench_algos(cfg, _env_spec(cfg), args.out, losses=losses, seeds=tuple(range(args.seeds)),
                           regimes=parse_regimes(args.regimes) or None, eval_episodes=args.eval_episodes)
        return 0 if done else 130  # stopped by SIGINT/SIGTERM
    if args.what == "peers":
        from tristream.bench.peers import bench_peers
        from tristream.bench.variants import parse_named_overrides
        bench_peers(cfg, args.out, peer=args.peer, env_steps=args.env_steps, seconds=args.seconds or 200.0,
                    seeds=args.seeds, also=parse_named_overrides(args.also, "bench peers --also"))
        return 0
    if args.what == "chaos":
        from tristream.bench.chaos import bench_chaos
        r = bench_chaos(args.preset, args.overrides, args.out, backend=cfg.runtime.backend,
                        seconds=args.seconds or 3600.0, fault_every=args.fault_every, seed=cfg.run.seed,
                        control=not args.no_control)
        return 0 if r["exit_code"] == 0 else 1
    if args.what == "decode":
        from tristream.bench.decode import bench_decode, parse_batch_sizes, parse_variants
        draft_ks, quant = parse_variants(args.draft_k, args.quant, args.quant_draft_k)
        batch_sizes = parse_batch_sizes(args.batch_size)
        if not args.checkpoint:
            raise ValueError("bench decode needs --checkpoint DIR: an LM from `tristream sft --preset lm_tiny --out DIR`")
        bench_decode(args.checkpoint, args.out, problems=args.problems, batch_sizes=batch_sizes,
                     draft_ks=draft_ks, quant=quant, quant_draft_k=args.quant_draft_k, repeats=args.repeats,
                     threads=cfg.run.torch_threads)
        return 0
    from tristream.bench.throughput import bench_throughput
    modes = tuple(m.strip() for m in args.modes.split(","))
    bench_throughput(cfg, _env_spec(cfg), args.out, modes=modes, repeats=args.repeats, warmup=args.warmup,
                     steps=args.measure_steps, ceiling_steps=args.ceiling_steps)
    return 0


def cmd_plan(args) -> int:
    from tristream.plan import command
    for option, value in (("--warmup", args.warmup), ("--measure-steps", args.measure_steps),
                          ("--repeats", args.repeats)):
        if value < 1:
            raise ValueError(f"plan {args.what}: {option} must be >= 1, got {value}")
    cfg = _load(args)
    if args.what == "measure":
        command.cmd_measure(cfg, _env_spec(cfg), args.out or "runs/plan/costs.json")
        return 0
    if args.what == "validate":
        from tristream.plan.validate import validate
        if args.machine or args.costs:
            raise ValueError("plan validate measures this machine itself: --machine and --costs do not apply")
        modes = tuple(m.strip() for m in args.modes.split(","))
        validate(cfg, _env_spec(cfg), args.out or "runs/plan/validation", modes=modes, repeats=args.repeats,
                 warmup=args.warmup, steps=args.measure_steps)
        return 0
    if not args.costs:
        raise ValueError(f"plan {args.what} needs --costs FILE, written by `tristream plan measure --out FILE`")
    if args.what == "predict":
        command.cmd_predict(cfg, args.costs, args.machine, [m.strip() for m in args.modes.split(",")],
                            warmup=args.warmup, steps=args.measure_steps, against=args.against,
                            out=Path(args.against).with_name("prediction.json") if args.against else None)
    else:
        command.cmd_search(cfg, args.costs, args.machine, warmup=args.warmup, steps=args.measure_steps,
                           write_preset=args.write_preset)
    return 0


def cmd_report(args) -> int:
    from tristream.bench.report import report_command
    if args.overrides:
        raise ValueError(f"tristream report takes result files, not config overrides (got {' '.join(args.overrides)})")
    return report_command(args.results, args.docs, args.plots)


def cmd_env(args) -> int:
    import tristream.envs  # noqa: F401
    from tristream.registry import ENVS
    print("\n".join(ENVS.names()))
    return 0


def cmd_config(args) -> int:
    from tristream.config import Config, describe, to_dict
    if args.what != "reference" and (args.out is not None or args.cli):
        raise ValueError(f"--out and --cli belong to `tristream config reference`, not `config {args.what}`")
    if args.what == "reference":
        from tristream.cli_reference import reference_command
        return reference_command(args.overrides, args.out, args.cli)
    if args.what == "keys":
        for key, tp, default, help_ in describe(Config):
            print(f"{key:<32} {tp:<22} {str(default):<14} {help_}")
    else:
        import yaml
        print(yaml.safe_dump(to_dict(_load(args)), sort_keys=False))
    return 0


class _Parser(argparse.ArgumentParser):
    """Records the options that take a value (for telling an override from an option's value)."""

    value_options: set[str] = set()  # shared by the parser and its sub-commands

    def add_argument(self, *args, **kwargs):
        if kwargs.get("action") not in ("store_true", "store_false", "count", "help", "version") \
                and kwargs.get("nargs") != 0:
            self.value_options.update(a for a in args if a.startswith("-"))
        return super().add_argument(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tristream", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    import tristream.envs  # noqa: F401  (registers the built-in envs, so help can list them)
    from tristream.registry import ENVS, POLICIES
    import tristream.policies  # noqa: F401
    epilog = (f"overrides: {OVERRIDES_HELP}. envs (env.name; all: tristream env list): {ENVS.summary()}; any gymnasium "
              f"env: env.name=gym env.gym.id=ID|package.module:Class. policies (policy.name): {POLICIES.summary()}; "
              f"or an import path package.module:factory")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, what: list[str] | None = None, what_help: str = "", preset: str | None = "default",
               preset_help: str = "default: default"):
        if what:  # a positional choice must come before the open-ended overrides
            sp.add_argument("what", choices=what, help=what_help)
        sp.add_argument("--preset", default=preset, help=f"config preset name or YAML path ({preset_help})")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
        return sp

    t = common(sub.add_parser("train", epilog=epilog, help="the default recipe (demos, SFT, RL, eval), or RL from train.init",
                              description="With no train.init: collect demos, SFT, RL, evaluate SFT and RL, print a "
                                          "summary. With train.init=DIR: RL from that policy, then evaluate it "
                                          "(<run>/eval/rl.json)."))
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    t.set_defaults(func=cmd_train)
    c = common(sub.add_parser("collect", epilog=epilog, help="record scripted-expert demonstrations (HDF5, robomimic layout)"))
    c.add_argument("--out", required=True, help="output HDF5 path")
    c.set_defaults(func=cmd_collect)
    s = common(sub.add_parser("sft", epilog=epilog, help="behaviour cloning on a demonstration dataset, or SFT of a "
                              "language policy (policy.name=lm, e.g. --preset lm_tiny)",
                              description="VLA: behaviour cloning on --data. Language policy (policy.name=lm; "
                                          "--preset lm_tiny sets it): SFT of the MoE/MLA/MTP LM on the verifiable "
                                          "lm.task (keys: tristream config keys | grep ^lm.), no --data."))
    s.add_argument("--data", nargs="+", help="HDF5 dataset path(s) (tristream or LIBERO layout); not for "
                   "language policies (policy.name=lm, e.g. --preset lm_tiny: SFT on the lm.task arithmetic task)")
    s.add_argument("--out", required=True, help="output folder for the policy")
    s.set_defaults(func=cmd_sft)
    dp = common(sub.add_parser("dpo", epilog=epilog, help="DPO of a language policy after SFT, on preference pairs "
                               "(a JSONL file, or rejection-sampled from the model and ranked by the checker)"),
                preset="lm_text", preset_help="default: lm_text")
    dp.add_argument("--init", required=True, help="the SFT folder to start from (tristream sft --preset lm_text --out DIR)")
    dp.add_argument("--data", default=None, help="JSONL of {prompt, chosen, rejected} per line (default: dpo.pairs; "
                                                 "empty: rejection-sample pairs from the --init model)")
    dp.add_argument("--out", required=True, help="output folder for the policy")
    dp.set_defaults(func=cmd_dpo)
    e = common(sub.add_parser("eval", epilog=epilog, help="success per task on held-out seeds, 95%% CIs, GIFs; for a "
                              "language policy, held-out exact match of fp32, fake-quantized and INT8/INT4 weights"),
               preset=None,
               preset_help="default: the config.yaml of the run the checkpoint belongs to, if any, else default")
    e.add_argument("checkpoint", help="a policy folder, a checkpoint folder, a run directory, or an LM folder "
                                      "(lm.json; quantization group size: its own or lm.qat_group_size=N)")
    e.add_argument("--episodes", type=int, default=None, help="episodes (default: eval.episodes); LM: held-out "
                                                              "problems (default: its lm.eval_problems)")
    e.add_argument("--out", default=None, help="output folder (default: <checkpoint>/eval)")
    e.add_argument("--label", default="eval", help="name of this evaluation in tables and file names")
    e.set_defaults(func=cmd_eval)
    b = common(sub.add_parser("bench", epilog=epilog, help="benchmarks: env (env-only throughput, the ceiling), "
                              "throughput (sync vs async-rollout vs async, side by side), algos (every loss, two regimes), "
                              "decode (LM: plain vs MTP speculative, fp32/INT8/INT4), peers (PPO against "
                              "Stable-Baselines3, same settings), chaos (a run under injected faults)"),
               ["env", "throughput", "algos", "decode", "peers", "chaos"],
               "which benchmark")
    b.add_argument("--num-envs", type=int, default=8, help="env: envs stepped in one process")
    b.add_argument("--steps", type=int, default=500, help="env: env steps per env")
    b.add_argument("--modes", default="sync,async-rollout,async",
                   help="throughput: modes, comma-separated, each MODE[@BACKEND][:KEY=VALUE]... "
                        "(e.g. sync,async,async:runtime.max_policy_lag=2)")
    b.add_argument("--repeats", type=int, default=3, help="throughput, decode: interleaved repeats of every mode / variant")
    b.add_argument("--warmup", type=int, default=1, help="throughput: unmeasured global steps per run")
    b.add_argument("--measure-steps", type=int, default=3, help="throughput: measured global steps per run")
    b.add_argument("--ceiling-steps", type=int, default=4000, help="throughput: env steps per env worker of the "
                                                                  "env-only ceiling (0: skip it; lower it for slow "
                                                                  "simulators such as LIBERO)")
    b.add_argument("--out", default="runs/bench", help="throughput, algos, decode, peers, chaos: output folder")
    b.add_argument("--losses", default="", help="algos: losses, comma-separated (default: all; for a "
                   "language policy grpo, gspo, fiberpo, fiberpo_domain)")
    b.add_argument("--regimes", default="", help="algos: regimes, comma-separated, each NAME[:KEY=VALUE]... "
                   "(default: default and aggressive), e.g. fp32,int4:rollout.weights=int4")
    b.add_argument("--seeds", type=int, default=3, help="algos: seeds per loss and regime; peers: seeds per side")
    b.add_argument("--peer", default="sb3", help="peers: the other library, installed in a venv of its own on first "
                                                 "use ($TRISTREAM_PEERS_DIR, default ~/.cache/tristream/peers): sb3 "
                                                 "(Stable-Baselines3 PPO, equal env steps) or sf (Sample Factory "
                                                 "APPO, equal wall time)")
    b.add_argument("--also", default="", help="peers: more tristream sides, comma-separated, each NAME[:KEY=VALUE]... "
                                               "(e.g. vla:policy.name=vla: the default VLA beside the peer-sized net)")
    b.add_argument("--env-steps", type=int, default=100_000, help="peers sb3: env steps per run (rounded up to whole "
                                                                  "rollouts)")
    b.add_argument("--seconds", type=float, default=None,
                   help="peers sf: wall seconds per run (default 200); chaos: seconds of faults (default 3600)")
    b.add_argument("--fault-every", type=float, default=60.0, help="chaos: mean seconds between injected faults")
    b.add_argument("--no-control", action="store_true", help="chaos: skip the undisturbed run to the same global "
                   "step that the drill's final policy is compared with")
    b.add_argument("--eval-episodes", type=int, default=100, help="algos: held-out episodes per trained policy")
    b.add_argument("--checkpoint", default="", help="decode: LM folder from `tristream sft --preset lm_tiny --out DIR`")
    b.add_argument("--problems", type=int, default=64, help="decode: held-out prompts decoded per pass")
    b.add_argument("--batch-size", default="1,16,64", help="decode: prompts decoded together, comma-separated "
                   "(a row per batch size)")
    b.add_argument("--draft-k", default="1,2,3,4", help="decode: MTP draft lengths for fp32 weights, comma-separated")
    b.add_argument("--quant", default="int8,int4", help="decode: exported low-bit weights to add (int8, int4 or empty)")
    b.add_argument("--quant-draft-k", type=int, default=3, help="decode: draft length of the low-bit speculative "
                                                                 "variants (0: plain only)")
    b.set_defaults(func=cmd_bench)
    pl = common(sub.add_parser("plan", epilog=epilog, help="measure what each stage costs here, predict throughput "
                               "per mode with a model of the pipeline, search the best shard plan (docs/planning.md)"),
                ["measure", "predict", "search", "validate"], "measure: probe the stage costs of the configured "
                "workload; predict: simulate the modes on those costs; search: the best shard plan and batching; "
                "validate: predicted against measured (`bench throughput`), each repeat on costs measured just before")
    pl.add_argument("--out", default=None, help="measure: the cost file to write (default runs/plan/costs.json); "
                    "validate: the output folder (default runs/plan/validation)")
    pl.add_argument("--costs", default="", help="predict, search: the cost file from `plan measure`")
    pl.add_argument("--machine", default=None, help="predict, search: the machine, KEY=VALUE,... or a YAML file "
                    "(cores, nodes, gpus, gpu_speedup, link_gbps, memory_gb; default: this machine)")
    pl.add_argument("--modes", default="sync,async-rollout,async", help="predict, validate: modes as `bench "
                    "throughput` takes them, MODE[:KEY=VALUE]...")
    pl.add_argument("--repeats", type=int, default=3,
                    help="validate: repeats (each: stage costs, then every mode once)")
    pl.add_argument("--against", default=None, help="predict: a throughput.json of `bench throughput`: predict its "
                    "modes and steps, print the error of each prediction, write prediction.json beside it")
    pl.add_argument("--warmup", type=int, default=1, help="predict, search, validate: unmeasured global steps")
    pl.add_argument("--measure-steps", type=int, default=3, help="predict, search, validate: measured global steps")
    pl.add_argument("--write-preset", default=None, metavar="PATH", help="search: write the best plan as a preset "
                    "YAML (use it with --preset PATH)")
    pl.set_defaults(func=cmd_plan)
    v = sub.add_parser("env", help="list registered envs")
    v.add_argument("what", choices=["list"])
    v.set_defaults(func=cmd_env)
    k = common(sub.add_parser("config", epilog=epilog, help="show the resolved config (show), every key with help "
                              "(keys), or the Markdown reference of the keys and the CLI (reference)"),
               ["show", "keys", "reference"], "show: the resolved config as YAML; keys: every key with type, default, "
               "help; reference: the Markdown reference of every key (--cli: of the command line)")
    k.add_argument("--out", metavar="DIR", default=None, help="reference: write config.md and cli.md into DIR "
                   "(docs/reference holds the committed copies) instead of printing")
    k.add_argument("--cli", action="store_true", help="reference: print the CLI reference instead of the config one")
    k.set_defaults(func=cmd_config)
    r = sub.add_parser("report", help="a benchmark result file as its table (and figure); the docs' measured "
                       "tables rebuilt from their result files",
                       description="Print the table of each result file a `tristream bench ...` wrote, with the "
                                   "command, commit and machine that made it. --docs rebuilds every "
                                   "`<!-- report FILE -->` block of those Markdown files from FILE.")
    r.add_argument("results", nargs="*", metavar="RESULT", help="result files (peers.json, throughput.json, ...)")
    r.add_argument("--docs", nargs="+", metavar="PATH", help="Markdown files or folders whose report blocks to "
                   "rebuild in place (e.g. README.md docs)")
    r.add_argument("--plots", action="store_true", help="also redraw each result's figure beside it")
    r.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _omp_wait_policy(argv)
    parser = build_parser()
    from tristream import provenance as meta
    meta.COMMAND = ["tristream", *argv]  # result files name the command that made them
    # Config overrides (key.sub=value) may stand anywhere, except as an option's value (--modes may hold
    # `async:runtime.max_policy_lag=2`); argparse sees only the rest.
    takes_value = parser.value_options
    is_override = ["=" in a and not a.startswith("-") and (i == 0 or argv[i - 1] not in takes_value)
                   for i, a in enumerate(argv)]
    overrides = [a for a, o in zip(argv, is_override) if o]
    args = parser.parse_args([a for a, o in zip(argv, is_override) if not o])
    args.overrides = overrides
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # bad input, a missing or unreadable file, a full disk
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
