"""The typed config tree. Every field has a default that works out of the box and a one-line help.

Presets (YAML in ``presets/``) override defaults; dotted command-line overrides override presets:
``tristream train algo.lr=3e-4 rollout.num_envs=16``. The resolved tree is saved into every run directory.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, Optional

from tristream.cores import auto_env_workers


def f(default, help: str, **limits):
    """A field with help text and optional min/max limits (checked on load)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **limits})
    return field(default=default, metadata={"help": help, **limits})


@dataclass
class RunConfig:
    name: str = f("default", "run name; outputs go to <dir>/<name>/")
    dir: str = f("runs", "parent directory of run directories")
    seed: int = f(0, "master seed: env seeds, sampling and initialisation derive from it", min=0)
    torch_threads: int = f(2, "torch intra-op threads in the learner process", min=1)
    precision: Literal["fp32", "bf16"] = f(
        "fp32", "RL forward passes of the learner and the inference worker: bf16 runs the policy's encoders and "
                "trunk under bfloat16 autocast (fp32 weights, optimizer state, heads, log-probs and losses); fast "
                "on CPUs with AVX512-BF16 or AMX and on GPUs, slower elsewhere (docs/policies.md, Precision)")


@dataclass
class GymConfig:
    id: str = f("", "env.name=gym: a gymnasium id (e.g. Pendulum-v1) or an import path "
                    "package.module:ClassOrFactory; its constructor gets env.kwargs")
    image_keys: list[str] = f([], "Dict observation keys used as cameras (empty: every uint8 image-shaped key)")
    state_keys: list[str] = f([], "Dict observation keys concatenated into the state (empty: every other Box key)")
    instruction: str = f("", "fixed instruction (empty: the observation's Text key, info['instruction'], "
                             "else the env id)")
    render: Literal["auto", "always", "never"] = f(
        "auto", "use the env's render() as the camera when it has no image observation: always, never, or "
                "auto (when built with render_mode=rgb_array)")
    reward_scale: float = f(1.0, "multiply the env's reward by this", min=0.0)
    flip_vertical: bool = f(False, "flip camera images upside down (renderers whose row 0 is the bottom, e.g. "
                                   "robosuite)")


@dataclass
class EnvConfig:
    name: str = f("tabletop", "registered env name (tristream env list) or import path package.module:factory")
    tasks: list[str] = f([], "task families for the tabletop mix (empty: the env's default mix); a preset's "
                             "list is cleared when the command line moves env.name to another simulator")
    image_size: int = f(64, "square camera resolution in pixels", min=8, max=512)
    max_episode_steps: int = f(50, "env steps before truncation", min=1)
    reward_shaping: bool = f(False, "add the env's dense shaping term to the sparse success reward")
    step_latency_ms: float = f(0.0, "latency model: median extra wall time per env step, log-normal (0: off)",
                               min=0.0)
    reset_latency_ms: float = f(0.0, "latency model: median extra wall time per reset, log-normal", min=0.0)
    latency_sigma: float = f(1.0, "latency model: log-normal sigma (the length of the tail)", min=0.0)
    kwargs: dict[str, Any] = f({}, "extra keyword arguments for the env factory (env.kwargs.KEY=VALUE; "
                                   "values parsed as YAML scalars)")
    gym: GymConfig = field(default_factory=GymConfig)


@dataclass
class PolicyConfig:
    name: str = f("vla", "registered policy name or import path package.module:factory")
    head: Literal["gaussian", "discrete"] = f("gaussian", "action head: Gaussian chunks or 256-bin tokens")
    chunk_len: int = f(4, "actions per chunk (K); one inference call per chunk", min=1)
    hidden_dim: int = f(256, "trunk width", min=8)
    init_log_std: float = f(-1.0, "initial log std of the Gaussian head")
    kwargs: dict[str, Any] = f({}, "extra keyword arguments for the policy factory (policy.kwargs.KEY=VALUE; "
                                   "for vla any VLAConfig field, e.g. policy.kwargs.lang_encoder=bow)")

    def factory_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the policy factory: every setting of this section but the name, plus kwargs."""
        named = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "kwargs")}
        return {**named, **self.kwargs}

    def validate(self) -> None:
        shadowed = sorted(set(self.kwargs) & {f.name for f in fields(self)})
        if shadowed:
            raise ValueError(f"policy.kwargs.{shadowed[0]} repeats a policy setting: use policy.{shadowed[0]}="
                             f"... instead")


@dataclass
class CollectConfig:
    episodes: int = f(400, "expert episodes to record", min=1)
    expert_noise: float = f(0.3, "std of Gaussian noise added to the scripted expert's actions", min=0.0)
    workers: int = f(2, "collector processes", min=1)
    keep_failures: bool = f(False, "also keep episodes the noisy expert failed")
    tasks: list[str] = f([], "task families of the demonstrations (empty: env.tasks), e.g. all four for a "
                             "generalist SFT policy that RL then post-trains on env.tasks")


@dataclass
class SFTConfig:
    steps: int = f(1500, "behaviour-cloning gradient steps", min=0)
    batch_size: int = f(64, "samples per BC step", min=1)
    lr: float = f(1e-3, "Adam learning rate", min=0.0)
    weight_decay: float = f(0.0, "AdamW weight decay", min=0.0)
    log_every: int = f(50, "steps between console lines", min=1)
    flip_vertical: Literal["auto", True, False] = f(
        "auto", "turn demo images upside down on load: auto (per file: LIBERO/robomimic robosuite files, "
                "stored bottom-up, are flipped; tristream's own files are not), true (every file) or false (none)")


@dataclass
class RolloutConfig:
    num_envs: int = f(32, "environments in total, over all env workers", min=1)
    episodes_per_env: int = f(1, "episodes each env runs per global step (rollouts are episodic; see steps_per_env)",
                              min=1)
    steps_per_env: int = f(0, "0: episodic rollouts (each env runs episodes_per_env whole episodes per global step); "
                              "N: each env runs exactly N decisions per global step and an unfinished episode goes on "
                              "in the next step, bootstrapped from the value function at the cut (SB3 / CleanRL's "
                              "n_steps; for long episodes); GAE only", min=0)
    segment_len: int = f(8, "decision steps per streamed trajectory segment", min=1)
    group_size: int = f(1, "envs that share each episode seed (a GRPO group: same task and initial state)", min=1)
    speculative_k: int = f(0, "language policies: draft tokens per round of MTP self-speculative sampling in "
                              "rollouts (0: plain decoding); exact: the samples follow the full model's distribution "
                              "(drawn from one stream per inference batch, not per decision)",
                           min=0, max=8)
    weights: Literal["fp32", "int8", "int4"] = f(
        "fp32", "language policies: the weights rollouts are generated with: fp32, or the round-to-nearest INT8 / "
                "INT4 export of the learner's weights (re-exported on each publication; group size lm.qat_group_size); "
                "the learner keeps training fp32 (docs/lm.md, Low-bit rollouts)")


@dataclass
class AlgoConfig:
    loss: str = f("ppo", "policy loss: ppo, decoupled_ppo, grpo, gspo, fiberpo, fiberpo_domain or one added with "
                         "tristream.algos.register_loss (docs/algorithms.md, docs/extending.md)")
    advantage: Literal["gae", "grpo"] = f("gae", "advantage estimator")
    loss_reduction: Optional[Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                                     "seq-mean-token-sum-norm"]] = f(
        None, "how per-token losses reduce to a scalar (null: the loss's own: token-mean for ppo, "
              "seq-mean-token-mean for grpo, gspo and fiberpo)")
    lr: float = f(3e-4, "Adam learning rate", min=0.0)
    log_std_lr_mult: float = f(1.0, "learning-rate multiplier for the Gaussian head's log std (the exploration "
                                    "noise), so RL can move the std BC fitted (docs/algorithms.md)", min=0.0)
    value_lr_mult: float = f(1.0, "learning-rate multiplier for the value head (GAE; a head behaviour cloning never "
                                  "trained starts from random weights)", min=0.0)
    lr_schedule: Literal["constant", "linear"] = f(
        "constant", "learning rate over RL: constant, or linear from algo.lr at the first global step to "
                    "algo.lr / train.steps at the last (CleanRL's anneal_lr)")
    gamma: float = f(0.99, "discount per decision step", min=0.0, max=1.0)
    gae_lambda: float = f(0.95, "GAE lambda", min=0.0, max=1.0)
    clip_eps: float = f(0.2, "PPO ratio clip", min=0.0)
    clip_eps_high: Optional[float] = f(None, "upper ratio clip of ppo / decoupled_ppo / grpo, 1 + clip_eps_high "
                                              "(null: clip_eps; larger: DAPO's clip-higher)", min=0.0)
    dual_clip: Optional[float] = f(None, "PPO dual clip constant (> 1) or null")
    vf_coef: float = f(0.5, "value loss weight", min=0.0)
    ent_coef: float = f(0.0, "entropy bonus weight", min=0.0)
    max_grad_norm: float = f(1.0, "gradient clipping norm (0: no clipping)", min=0.0)
    norm_adv: bool = f(True, "whiten GAE advantages over each mini-batch (docs/algorithms.md)")
    norm_reward: bool = f(False, "GAE: divide rewards by the running std of the discounted return (SB3 VecNormalize's "
                                 "norm_reward), so value targets stay near unit scale whatever the env's reward "
                                 "units; for dense rewards of large magnitude (docs/algorithms.md)")
    value_norm: bool = f(False, "GAE: the value head predicts returns standardised by their running mean and std "
                                "(Sample Factory's normalize_returns); its outputs are de-standardised for GAE, so a "
                                "return far from 0 costs the shared encoder no large value error (docs/algorithms.md)")
    grpo_std_norm: bool = f(True, "GRPO: divide each group's centred returns by the group's std (false: "
                                  "Dr. GRPO, centred only, so a group with nearly equal returns gets nearly "
                                  "zero advantages instead of unit-scale ones)")
    grpo_std_level: Literal["group", "batch"] = f(
        "group", "GRPO with grpo_std_norm: divide by each group's own std (GRPO) or by one std over the batch's "
                 "group-centred advantages (group mean, batch std: LitePPO), so groups whose returns barely differ "
                 "keep small advantages")
    update_epochs: int = f(2, "passes over each global step's data (the first as it streams in, the rest "
                                "shuffled once the step is complete)", min=1)
    shuffle: Literal["segments", "samples"] = f(
        "segments", "segments: pass 1 in stream order, passes 2..update_epochs shuffle whole trajectory segments "
                    "(each mini-batch holds sequences, as sequence-level losses need); samples: every pass, the "
                    "first included, shuffles single samples of the complete step (mini-batches of independent "
                    "decisions, as Stable-Baselines3 and CleanRL draw them; pass 1 waits for the step; per-token "
                    "losses under token-mean only)")
    critic_warmup: int = f(0, "GAE: global steps at the start that train only the value head (policy frozen), "
                              "so the first policy updates use a fitted critic (RLinf/RL4VLA-style warm-up; they "
                              "count in train.steps)", min=0)
    target_kl: Optional[float] = f(None, "skip a global step's remaining passes once a pass's mean approx KL "
                                         "to the old policy exceeds this (CleanRL's target_kl; null: off)", min=0.0)
    global_batch: int = f(256, "samples (decision steps) per optimizer step", min=1)
    micro_batch: int = f(128, "samples per forward/backward (gradient accumulation)", min=1)
    fiberpo_eps: float = f(0.03, "FiberPO token radius (tristream default; the paper gives none)", min=0.0)
    fiberpo_c_pos: float = f(0.15, "FiberPO positive-channel budget C+ (tristream default)", min=0.0)
    fiberpo_c_neg: float = f(0.08, "FiberPO negative-channel budget C- (tristream default)", min=0.0)
    ratio_reference: Literal["proximal", "behaviour"] = f(
        "proximal", "what the trust region's ratio of stale (async) data is measured against: proximal (the "
                    "policy when the sample is first trained, recomputed; behaviour is only an importance weight) "
                    "or behaviour (the policy that generated it, never recomputed: a FiberPO gate then sees and "
                    "bounds the whole behaviour-to-current drift); docs/algorithms.md")
    rollout_is_cap: Optional[float] = f(
        None, "training-inference mismatch correction: weight each token's policy loss by the truncated importance "
              "weight min(pi_learner / pi_rollout, cap), with pi_learner recomputed before the update (verl/AReaL's "
              "TIS; for low-bit or otherwise mismatched rollouts); null: off", min=1.0)
    gspo_clip_low: float = f(3e-4, "GSPO lower clip", min=0.0)
    gspo_clip_high: float = f(4e-4, "GSPO upper clip", min=0.0)

    def validate(self) -> None:
        from tristream.algos.registry import loss_spec
        try:
            loss_spec(self.loss)
        except ValueError as e:
            raise ValueError(f"algo.loss: {e}") from None
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1 or null, got {self.dual_clip}")
        if self.loss in ("fiberpo", "fiberpo_domain") and self.fiberpo_c_neg > self.fiberpo_c_pos:
            raise ValueError("fiberpo_c_neg should not exceed fiberpo_c_pos (the negative channel drifts faster)")
        if self.ratio_reference == "behaviour" and loss_spec(self.loss).proximal == "always":
            raise ValueError(f"algo.ratio_reference=behaviour: loss {self.loss!r} always measures its trust region "
                             f"against recomputed proximal log-probs; use ratio_reference=proximal or another loss")
        if self.rollout_is_cap is not None and "behaviour_logp" in loss_spec(self.loss).inputs:
            raise ValueError(f"algo.rollout_is_cap: loss {self.loss!r} already weights each token by "
                             f"pi_proximal / pi_behaviour (decoupled PPO); use it with grpo, gspo, fiberpo or "
                             f"fiberpo_domain, or set algo.rollout_is_cap=null")
        if self.norm_reward and self.advantage != "gae":
            raise ValueError(f"algo.norm_reward scales GAE's rewards (advantage={self.advantage!r} normalises "
                             f"outcomes per group); set algo.norm_reward=false or algo.advantage=gae")
        if self.value_norm and self.advantage != "gae":
            raise ValueError(f"algo.value_norm standardises the critic's targets (advantage={self.advantage!r} uses "
                             f"no critic); set algo.value_norm=false or algo.advantage=gae")
        spec = loss_spec(self.loss)
        reduction = self.loss_reduction or spec.reduction
        if self.shuffle == "samples" and (reduction != "token-mean" or not spec.per_token):
            raise ValueError(f"algo.shuffle=samples breaks up the sequences that loss {self.loss!r} with reduction "
                             f"{reduction!r} reads; use algo.shuffle=segments, or "
                             f"a per-token loss with token-mean reduction (ppo, decoupled_ppo, grpo with "
                             f"algo.loss_reduction=token-mean)")
        if self.critic_warmup > 0 and self.advantage != "gae":
            raise ValueError(f"critic_warmup={self.critic_warmup} needs advantage=gae (advantage={self.advantage!r} "
                             f"uses no critic); set it to 0")


@dataclass
class RuntimeConfig:
    backend: Literal["local", "serial", "ray"] = f(
        "local", "local: roles in processes; serial: one process (debugging, exact tests); ray: roles as Ray "
                 "actors on one machine or a cluster (docs/cluster.md, the ray section)")
    mode: Literal["sync", "async-rollout", "async"] = f(
        "sync", "sync: lockstep baseline; async-rollout: groups on their own clocks, train after the rollout; "
                "async: also train while the rollout streams in (docs/architecture.md)")
    env_workers: int | Literal["auto"] = f(
        "auto", "EnvWorker processes (actors on Ray); auto: this machine's usable cores less one each for inference "
                "and the learner, at least 2, lowered to a count that divides rollout.num_envs into "
                "groups_per_worker groups per worker (resolved on load: the run's config.yaml holds the number)",
        min=1)
    groups_per_worker: int = f(1, "env groups (slots) per env worker, each stepping on its own clock", min=1)
    batch_max: int = f(0, "dynamic batcher (async modes): fire at this many samples (0: half the envs); "
                          "sync is always lockstep", min=0)
    lockstep: Optional[bool] = f(None, "inference answers every running group of a step in one batch (null: in sync "
                                       "only; true in async: the batches of sync, e.g. to compare throughput)")
    batch_timeout_ms: float = f(5.0, "dynamic batcher: fire after this wait when batch_max is not reached", min=0.0)
    max_policy_lag: int = f(1, "async: how many versions older than the learner a trained sample may be "
                               "(0: the data of sync)", min=0)
    inference_threads: int = f(1, "torch threads of the inference worker", min=1)
    timeout_s: float = f(120.0, "give up on a role that sends nothing for this long (a stopped role process is "
                                "restarted instead)", min=1.0)
    audit_samples: bool = f(False, "log a key of every trained segment per global step (metrics.jsonl "
                                   "audit_keys): `bench chaos` checks that nothing is trained twice")
    max_restarts: int = f(3, "local and ray backends: restarts allowed per role before the run fails", min=0)


_RAY_BUILTIN = ("CPU", "GPU", "memory", "object_store_memory")


@dataclass
class RayRoleConfig:
    """Where one role's Ray actors go and what each reserves (docs/cluster.md)."""
    num_cpus: float = f(0.5, "CPU share reserved per actor (a scheduling share, not a limit)", min=0.0)
    num_gpus: float = f(0.0, "GPU share reserved per actor", min=0.0)
    resources: dict[str, float] = f({}, "custom Ray resources per actor (nodes declare them: ray start "
                                        "--resources='{\"sim\": 8}'), e.g. ray.env_worker.resources.sim=1")
    labels: dict[str, str] = f({}, "node labels the actor's node must carry (a Ray label selector), "
                                   "e.g. ray.inference.labels.tier=gpu")

    def validate(self) -> None:
        for name, amount in self.resources.items():
            if name in _RAY_BUILTIN:
                raise ValueError(f"resources.{name}: use num_cpus / num_gpus for built-in resources; "
                                 f"resources names custom ones (declared with ray start --resources)")
            if amount <= 0:
                raise ValueError(f"resources.{name}={amount}: amounts must be > 0")


@dataclass
class RayConfig:
    """runtime.backend=ray: the cluster to use and the placement of the roles (docs/cluster.md). The
    number of env worker actors is runtime.env_workers; there is one inference actor and one learner actor
    (which writes the run directory: without node constraints it stays on the driver's node)."""
    address: str = f("", "empty: start a local Ray instance; 'auto' or host:port: join that running cluster")
    num_cpus: int = f(0, "local instance only: CPUs it offers (0: all cores)", min=0)
    start_timeout_s: float = f(60.0, "fail when the actors are not all placed and started within this time; a "
                                      "restart after a lost node waits this long for the node to come back",
                               min=1.0)
    shared_memory: bool = f(True, "env worker actors on the inference actor's node pass observation images "
                                  "through the node's shared memory (/dev/shm, as the local backend does) "
                                  "instead of Ray's object store; actors on other nodes always use the store")
    env_worker: RayRoleConfig = field(default_factory=RayRoleConfig)
    inference: RayRoleConfig = field(default_factory=RayRoleConfig)
    learner: RayRoleConfig = field(default_factory=RayRoleConfig)

    def validate(self) -> None:
        a = self.address
        if a not in ("", "auto") and not a.startswith("ray://"):
            host, _, port = a.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"address={a!r}: expected '' (start a local instance), 'auto', host:port "
                                 f"or ray://host:port")


@dataclass
class TrainConfig:
    steps: int = f(30, "global steps of RL (one rollout + update each)", min=0)
    save_every: int = f(5, "global steps between checkpoints", min=1)
    init: str = f("", "policy to start RL from (a policy folder); empty: the recipe's SFT policy")
    rl_log_std: Optional[float] = f(None, "reset the Gaussian head's log std before RL (exploration noise); "
                                          "null: keep what SFT learned")
    rl_gaussian_tokens: Optional[Literal["chunk", "dim"]] = f(
        None, "log-prob units of the Gaussian head during RL: chunk (one per action chunk) or dim (one per "
              "action dimension and chunk step, like the discrete head's tokens: per-token trust regions such as "
              "FiberPO's act per dimension); null: the policy's own (policy.kwargs.gaussian_tokens, default chunk)")


@dataclass
class EvalConfig:
    episodes: int = f(100, "held-out episodes per evaluated checkpoint", min=1)
    seed_offset: int = f(10_000_000, "held-out seeds start here (training seeds stay far below)", min=0)
    videos: int = f(4, "episodes to save as GIFs", min=0)
    deterministic: bool = f(True, "act with the mean / most likely action")
    num_envs: int = f(16, "envs stepped together in the evaluating process (lower it for heavy simulators: "
                          "LIBERO needs ~2 GB per env)", min=1)


@dataclass
class LMTrainConfig:
    """Language policies (policy.name=lm): the model, the task, and SFT (docs/lm.md)."""
    config: str = f("tiny", "LM architecture: a preset of tristream.lm.config (tiny, ...) or a path to a "
                            "DeepSeek-V3 / JoyAI-Flash style config.json")
    init: str = f("", "start from this LM folder (tristream sft output; its architecture wins over lm.config), "
                      "e.g. a QAT stage after SFT; empty: a fresh model")
    task: Literal["addition", "multiplication"] = f("addition", "verifiable arithmetic task (tristream.lm.tasks)")
    digits: int = f(4, "task: digits per operand (zero-padded)", min=1, max=30)
    reverse: bool = f(True, "task: write answers least significant digit first (learnable by a tiny model)")
    heldout_fraction: float = f(0.1, "task: fraction of all problems held out from training (by prompt hash)",
                                min=0.01, max=0.9)
    zero_digit_prob: float = f(0.3, "task, training problems only: each operand digit is 0 with this "
                                    "probability (else uniform), which lets a tiny model past the plateau of "
                                    "uniform problems (docs/lm.md); held-out problems stay uniform",
                               min=0.0, max=0.9)
    teacher_error: float = f(0.0, "SFT on a text env: probability that a training target is the domain's "
                                  "typical mistake instead of the answer (an imperfect teacher, which RL against "
                                  "the checker can correct; docs/language_rl.md)", min=0.0, max=1.0)
    steps: int = f(1000, "SFT optimizer steps", min=0)
    batch_size: int = f(64, "problems per step", min=1)
    lr: float = f(1e-3, "AdamW peak learning rate", min=0.0)
    min_lr_ratio: float = f(0.1, "the schedule decays to lr x this", min=0.0, max=1.0)
    schedule: Literal["cosine", "linear"] = f("cosine", "decay after warm-up")
    warmup_steps: int = f(50, "linear warm-up steps", min=0)
    weight_decay: float = f(0.0, "AdamW weight decay", min=0.0)
    max_grad_norm: float = f(1.0, "gradient clipping norm (0: off)", min=0.0)
    mtp_weight: float = f(0.1, "weight of the MTP (t+2) loss beside the next-token loss (0: MTP untrained)",
                          min=0.0)
    router_bias_rate: Optional[float] = f(None, "aux-loss-free balancing: router bias update rate per step "
                                                "(0: off; null: the model config's)", min=0.0)
    router_bias_update: Optional[Literal["sign", "proportional"]] = f(
        None, "aux-loss-free balancing rule: sign (DeepSeek-V3) or proportional to the relative load error "
              "(null: the model config's)")
    router_bias_schedule: Literal["constant", "lr_decay"] = f(
        "constant", "aux-loss-free balancing: constant rate, or lr_decay: the rate times the learning rate's "
                    "decay factor after warm-up (lr / peak lr; the router moves slower as lr falls, so the bias "
                    "needs smaller steps to follow it and oscillates less around balance)")
    qat: Literal["none", "int8", "int4"] = f("none", "quantization-aware training: fake-quantized weights")
    qat_group_size: int = f(32, "QAT and export: weights per quantization scale (along the input dim)", min=2)
    qat_start: int = f(0, "QAT: step at which fake quantization switches on", min=0)
    eval_every: int = f(250, "steps between held-out exact-match evaluations (greedy decoding)", min=1)
    eval_problems: int = f(256, "held-out problems per evaluation", min=1)
    log_every: int = f(50, "steps between metric rows / console lines", min=1)

    def validate(self) -> None:
        if self.qat != "none" and self.qat_group_size % 2:
            raise ValueError(f"qat_group_size must be even for packed INT4 export, got {self.qat_group_size}")


@dataclass
class DPOConfig:
    """Direct preference optimisation of a language policy after SFT (tristream dpo; docs/lm.md, DPO)."""
    steps: int = f(0, "DPO optimizer steps (the recipe's DPO stage runs when > 0)", min=0)
    pairs: str = f("", "a JSONL file of {prompt, chosen, rejected} pairs; empty: rejection-sample them from the SFT "
                       "model (chosen = a completion the checker accepts, rejected = one it rejects, same prompt)")
    prompts: int = f(1024, "rejection sampling: training prompts sampled", min=1)
    samples_per_prompt: int = f(8, "rejection sampling: completions per prompt (temperature policy.kwargs.temperature)",
                                min=2)
    beta: float = f(0.1, "DPO beta: the strength of the implicit KL to the reference (the SFT model)", min=1e-6)
    label_smoothing: float = f(0.0, "probability that a pair's preference is flipped (conservative DPO)",
                               min=0.0, max=0.49)
    batch_size: int = f(32, "pairs per optimizer step", min=1)
    lr: float = f(2e-5, "AdamW peak learning rate (linear warm-up, then decay to lr x min_lr_ratio)", min=0.0)
    schedule: Literal["cosine", "linear"] = f("linear", "decay after warm-up")
    min_lr_ratio: float = f(0.1, "the schedule decays to lr x this (JoyAI-Flash: 1e-6 -> 1e-7)", min=0.0, max=1.0)
    warmup_steps: int = f(10, "linear warm-up steps", min=0)
    max_grad_norm: float = f(1.0, "gradient clipping norm (0: off)", min=0.0)
    log_every: int = f(10, "steps between metric rows / console lines", min=1)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lm: LMTrainConfig = field(default_factory=LMTrainConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self) -> None:
        if self.runtime.env_workers == "auto":
            self.runtime.env_workers = auto_env_workers(self.rollout.num_envs, self.runtime.groups_per_worker)
        if (self.rollout.speculative_k or self.rollout.weights != "fp32") and self.policy.name != "lm":
            raise ValueError(f"rollout.speculative_k={self.rollout.speculative_k} / rollout.weights="
                             f"{self.rollout.weights}: only a language policy (policy.name=lm) generates with MTP "
                             f"drafts or low-bit weights; policy.name={self.policy.name!r} needs speculative_k=0 and "
                             f"weights=fp32")
        if self.rollout.steps_per_env and (self.algo.advantage != "gae" or self.rollout.group_size > 1
                                           or self.rollout.episodes_per_env > 1):
            raise ValueError(f"rollout.steps_per_env={self.rollout.steps_per_env} cuts episodes at a fixed number of "
                             f"decisions, which needs algo.advantage=gae, rollout.group_size=1 and "
                             f"rollout.episodes_per_env=1 (GRPO compares whole episodes); got advantage="
                             f"{self.algo.advantage}, group_size={self.rollout.group_size}, episodes_per_env="
                             f"{self.rollout.episodes_per_env}; or set rollout.steps_per_env=0")
        mismatched = self.rollout.weights != "fp32" or self.algo.rollout_is_cap is not None
        if mismatched and self.algo.ratio_reference == "behaviour":
            raise ValueError(f"algo.ratio_reference=behaviour never recomputes the proximal log-probs, which "
                             f"rollout.weights={self.rollout.weights} / algo.rollout_is_cap={self.algo.rollout_is_cap} "
                             f"need (the learner's log-probs to compare the rollout's with); use "
                             f"ratio_reference=proximal")
        if self.rollout.num_envs % (self.runtime.env_workers * self.runtime.groups_per_worker):
            raise ValueError(
                f"rollout.num_envs={self.rollout.num_envs} must divide evenly into runtime.env_workers="
                f"{self.runtime.env_workers} x runtime.groups_per_worker={self.runtime.groups_per_worker} groups")
