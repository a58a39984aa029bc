"""Learner (the "trainer"): advantages of segments, and one optimizer step on a mini-batch of samples.

A segment is a trajectory piece: the "sequence" of the LLM-style losses, whose "tokens" are its decision
steps times the action head's tokens per chunk. :meth:`Learner.prepare` computes values of the bootstrap
observations and advantages (GAE per segment, or GRPO per episode group); :meth:`Learner.optimizer_step`
accumulates one mini-batch micro-batch by micro-batch with the mini-batch's token and sequence counts as
normalisers, so the gradient does not depend on ``micro_batch``. Which mini-batches a global step makes,
and in what order, is :mod:`tristream.runtime.update`'s job, the same in every mode.

Behaviour log-probs (what inference sampled with) stay separate from the proximal ones (the trust region's
reference), which differ only for stale data or a loss that always recomputes them.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from tristream.algos.advantages import gae, grpo_advantages
from tristream.algos.registry import LossSpec, loss_spec, value_loss
from tristream.types import ObsBatch, Segment


@dataclass
class Samples:
    """All decision steps of one update, flattened; ``row`` names the segment of each (samples of a
    segment are contiguous and in time order)."""

    obs: ObsBatch
    actions: torch.Tensor  # [N, K, A]
    behaviour_logp: torch.Tensor  # [N, L] log-probs of the policy that acted
    proximal_logp: torch.Tensor  # [N, L] the trust region's reference: behaviour, or recomputed (stale data)
    advantages: torch.Tensor  # [N]
    returns: torch.Tensor  # [N]
    row: np.ndarray  # [N] segment index in the global step
    group_id: np.ndarray  # [N] GRPO group (FiberPO-Domain's prompt group)
    domain_id: np.ndarray  # [N] task family (FiberPO-Domain's domain)
    version: np.ndarray  # [N] policy version that produced each sample

    def __len__(self) -> int:
        return len(self.row)

    @staticmethod
    def concat(parts: list["Samples"]) -> "Samples":
        """Parts of one step (their rows are the step's segment ids already)."""
        cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
        return Samples(obs=ObsBatch.concat([p.obs for p in parts]), actions=cat("actions"),
                       behaviour_logp=cat("behaviour_logp"), proximal_logp=cat("proximal_logp"),
                       advantages=cat("advantages"), returns=cat("returns"),
                       row=np.concatenate([p.row for p in parts]),
                       group_id=np.concatenate([p.group_id for p in parts]),
                       domain_id=np.concatenate([p.domain_id for p in parts]),
                       version=np.concatenate([p.version for p in parts]))

    def select(self, idx: np.ndarray) -> "Samples":
        """The samples ``idx`` (which must keep each segment's samples contiguous and in order)."""
        t = torch.from_numpy(idx)
        return Samples(obs=ObsBatch(self.obs.images[idx], self.obs.state[idx], [self.obs.instruction[i] for i in idx]),
                       actions=self.actions[t], behaviour_logp=self.behaviour_logp[t],
                       proximal_logp=self.proximal_logp[t], advantages=self.advantages[t], returns=self.returns[t],
                       row=self.row[idx], group_id=self.group_id[idx], domain_id=self.domain_id[idx],
                       version=self.version[idx])


class Learner:
    def __init__(self, policy, algo, *, seed: int = 0, total_steps: int | None = None):
        """``total_steps``: global steps of the run, for ``algo.lr_schedule=linear`` (None: constant lr)."""
        self.policy = policy
        self.algo = algo
        self.total_steps = total_steps
        self.optimizer = torch.optim.Adam(self._param_groups(policy, algo), lr=algo.lr, eps=1e-5)
        self.rng = np.random.default_rng(seed)
        self.version = 0
        self.optimizer_steps = 0
        self._ids: dict[tuple, int] = {}  # stable small ints for GRPO groups and task domains
        self._warned_trust_region = False

    @staticmethod
    def _param_groups(policy, algo) -> list[dict]:
        """Adam groups by parameter name: the Gaussian head's log-std ("log_std") at lr x
        ``algo.log_std_lr_mult``, the value head ("value") at lr x ``algo.value_lr_mult``, the rest at lr.
        Adam moves a parameter by about lr per step whatever its gradient, so at lr 1e-4 a few hundred
        optimizer steps cannot move the std that BC fitted, nor fit a fresh value head."""
        groups: dict[float, list] = {}
        for name, p in policy.named_parameters():
            mult = (algo.log_std_lr_mult if "log_std" in name else algo.value_lr_mult if _is_value(name) else 1.0)
            groups.setdefault(float(mult), []).append(p)
        return [{"params": params, "lr_mult": mult} for mult, params in groups.items()]

    # --- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "rng": self.rng.bit_generator.state,
                "version": self.version, "optimizer_steps": self.optimizer_steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.version = int(state["version"])
        self.optimizer_steps = int(state["optimizer_steps"])

    def weights(self) -> dict[str, torch.Tensor]:
        """A detached copy of the current weights, safe to send while training goes on."""
        return {k: v.detach().clone() for k, v in self.policy.state_dict().items()}

    # --- advantages -----------------------------------------------------------------------------
    def _id(self, kind: str, key) -> int:
        return self._ids.setdefault((kind, key), len(self._ids))

    @torch.no_grad()
    def prepare(self, segments: list[Segment], normalize: bool = True, first_row: int = 0) -> Samples:
        """Advantages and flat samples for ``segments`` (GRPO: every episode of a group must be there).
        ``normalize``: apply the batch-level normalisation (:meth:`normalize`) over these segments.
        ``first_row``: the step's segment id of ``segments[0]``. Proximal log-probs = behaviour ones."""
        a = self.algo
        boot_idx = [i for i, s in enumerate(segments) if not s.terminated]
        boot_v = torch.zeros(len(segments))
        if boot_idx:
            obs = ObsBatch.stack([segments[i].bootstrap_obs for i in boot_idx]).as_dict()
            boot_v[boot_idx] = self.policy.value(obs).float()
        advs, rets = [], []
        if a.advantage == "gae":
            for i, s in enumerate(segments):
                T = s.length
                term = torch.zeros(T, 1, dtype=torch.bool)
                trunc = torch.zeros(T, 1, dtype=torch.bool)
                term[-1] = s.terminated
                trunc[-1] = s.truncated and not s.terminated
                adv, ret = gae(torch.from_numpy(s.rewards)[:, None], torch.from_numpy(s.values)[:, None], term, trunc,
                               boot_v[i:i + 1], truncation_values=boot_v[i].expand(T, 1), gamma=a.gamma,
                               lam=a.gae_lambda)
                advs.append(adv[:, 0])
                rets.append(ret[:, 0])
            adv = torch.cat(advs)
            if normalize:
                adv = self.normalize(adv)
        else:  # grpo: one outcome per episode, shared by all its steps
            episode_of = [(s.global_step, s.env_id, s.episode_seed) for s in segments]
            returns: dict[tuple, float] = defaultdict(float)
            for key, s in zip(episode_of, segments):
                returns[key] += float(s.rewards.sum())
            keys = list(returns)
            groups = {k: segments[episode_of.index(k)].group_key for k in keys}
            gid = {g: j for j, g in enumerate(dict.fromkeys(groups.values()))}
            ep_adv = grpo_advantages(torch.tensor([returns[k] for k in keys]),
                                     torch.tensor([gid[groups[k]] for k in keys]),
                                     normalize_std=a.grpo_std_norm and a.grpo_std_level == "group")
            by_key = dict(zip(keys, ep_adv.tolist()))
            adv = torch.cat([torch.full((s.length,), by_key[k]) for k, s in zip(episode_of, segments)])
            if normalize:
                adv = self.normalize(adv)
            rets = [torch.from_numpy(s.values) for s in segments]  # no critic target needed
        lengths = [s.length for s in segments]
        obs = ObsBatch.concat([s.obs for s in segments])
        actions = torch.from_numpy(np.concatenate([s.actions for s in segments]))
        behaviour = torch.from_numpy(np.concatenate([s.behaviour_logp for s in segments]))
        return Samples(
            obs=obs,
            actions=actions,
            behaviour_logp=behaviour,
            proximal_logp=behaviour,
            advantages=adv.float(),
            returns=torch.cat(rets).float(),
            row=np.repeat(np.arange(first_row, first_row + len(segments)), lengths),
            group_id=np.repeat([self._id("group", s.group_key) for s in segments], lengths),
            domain_id=np.repeat([self._id("domain", s.task) for s in segments], lengths),
            version=np.concatenate([s.policy_version for s in segments]),
        )

    def normalize(self, adv: torch.Tensor) -> torch.Tensor:
        """Batch-level normalisation of per-sample advantages [N]: GAE whitened (``algo.norm_adv``); GRPO
        with ``grpo_std_level=batch`` divided by the batch's std (already centred per group)."""
        a = self.algo
        if len(adv) < 2:
            return adv
        if a.advantage == "gae" and a.norm_adv:
            return (adv - adv.mean()) / (adv.std() + 1e-8)
        if a.advantage == "grpo" and a.grpo_std_norm and a.grpo_std_level == "batch":
            return adv / (adv.std() + 1e-8)
        return adv

    @torch.no_grad()
    def proximal_logp(self, samples: Samples, chunk: int = 256) -> torch.Tensor:
        """Log-probs [N, L] of ``samples``' actions under the current policy (the proximal policy of stale
        data: the trust region is measured against it, the behaviour policy is only an importance weight)."""
        self.policy.eval()
        parts = [self.policy.evaluate(self._obs(samples, sel), samples.actions[sel]).logp
                 for sel in np.array_split(np.arange(len(samples)), max(1, -(-len(samples) // chunk)))]
        self.policy.train()
        return torch.cat(parts)

    # --- optimisation ---------------------------------------------------------------------------
    def check_trust_region(self, stats: dict[str, float]) -> None:
        """Warn (once per learner) when the first optimizer step measured against a moved policy finds most
        tokens outside the loss's token radius or most trajectories zeroed: the step size overshoots the
        trust region, so the loss mostly discards its data instead of bounding its drift."""
        outside, zeroed = stats.get("token_clip_frac", 0.0), stats.get("traj_zeroed_frac", 0.0)
        if self._warned_trust_region or max(outside, zeroed) <= 0.5:
            return
        self._warned_trust_region = True
        print(f"[tristream] warning: at policy version {self.version}, one optimizer step already moved "
              f"{outside:.0%} of the tokens outside the trust region's radius and zeroed {zeroed:.0%} of the "
              f"trajectories (raw ratio mean {stats.get('raw_ratio_mean', float('nan')):.3g}, max "
              f"{stats.get('raw_ratio_max', float('nan')):.3g}). Lower algo.lr, use finer tokens "
              f"(train.rl_gaussian_tokens=dim for a Gaussian head), or widen the budgets (algo.fiberpo_eps, "
              f"algo.fiberpo_c_pos, algo.fiberpo_c_neg)", flush=True)

    def kl_exceeded(self, approx_kl: float) -> bool:
        """Whether a pass's mean approx KL ends the global step's passes (``algo.target_kl``)."""
        return self.algo.target_kl is not None and approx_kl > self.algo.target_kl

    @property
    def warming_up(self) -> bool:
        """The first ``algo.critic_warmup`` global steps fit the value head (parameters named "value...")
        alone, so GAE starts from a critic of the policy it will improve instead of a random one."""
        return self.algo.advantage == "gae" and self.version < self.algo.critic_warmup

    def lr(self) -> float:
        """The learning rate of the current global step (``version``): a function of the version alone, so
        a resumed run continues the schedule exactly."""
        if self.algo.lr_schedule == "linear" and self.total_steps:
            return self.algo.lr * max(0.0, 1.0 - self.version / self.total_steps)
        return self.algo.lr

    def optimizer_step(self, samples: Samples, idx: np.ndarray, batch: int | None = None) -> dict[str, float]:
        """One optimizer step on the samples ``idx`` (in stream order), accumulated over micro-batches.

        ``batch``: the full mini-batch size (default ``len(idx)``). A short mini-batch (a global step's
        last) weighs each of its samples 1/``batch``, as a full one does, so a handful of leftover samples
        makes a proportionally small step instead of a full-size step of their noise (and, in ``async``,
        streamed batches cut by arrival weigh what sync's mini-batches weigh).
        """
        a = self.algo
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr() * group.get("lr_mult", 1.0)  # absent in older checkpoints
        L = samples.behaviour_logp.shape[1]
        # Sub-rows: a segment's samples inside this mini-batch (the loss's "sequences").
        subrows = np.split(np.arange(len(idx)), np.flatnonzero(np.diff(samples.row[idx])) + 1)
        share = len(idx) / max(batch or len(idx), len(idx))  # this mini-batch's weight: 1 unless short
        tokens = self.policy.token_mask(samples.actions[idx])  # a language policy's generated tokens
        tokens = len(idx) * L if tokens is None else max(float(tokens.sum()), 1.0)
        norm = {"tokens": tokens / share, "seqs": len(subrows) / share, "samples": len(idx) / share}
        pre = self._precompute(samples, idx, subrows, norm) if self.loss.precompute else None
        self.optimizer.zero_grad(set_to_none=True)
        stats: dict[str, float] = defaultdict(float)
        ratio_max, first = 0.0, 0
        for last in range(len(subrows)):  # micro-batches cut only between sub-rows
            n = sum(len(sr) for sr in subrows[first:last + 1])
            if n >= a.micro_batch or last == len(subrows) - 1:
                part = None if pre is None else pre.select(torch.arange(first, last + 1))
                micro = self._micro(samples, idx, subrows[first:last + 1], norm, part)
                ratio_max = max(ratio_max, micro.pop("raw_ratio_max"))
                for key, v in micro.items():
                    stats[key] += v
                first = last + 1
        if self.warming_up:  # only the value function learns: the policy's own weights keep no gradient
            for name, p in self.policy.named_parameters():
                if not _is_value(name):
                    p.grad = None
        stats = {k: v / share for k, v in stats.items()}  # report the mini-batch's means, not its weight
        stats["raw_ratio_max"] = ratio_max
        stats["tokens_per_sample"] = tokens / len(idx)  # a language policy's mean response length
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), a.max_grad_norm or float("inf"))
        self.optimizer.step()
        self.optimizer_steps += 1
        stats["grad_norm"] = float(grad_norm)
        stats["lr"] = self.optimizer.param_groups[0]["lr"]
        return stats

    def _rows(self, samples: Samples, idx: np.ndarray, subrows: list[np.ndarray], logp: torch.Tensor):
        """Lay samples out as loss rows: [R sub-rows, T steps x L head tokens], plus mask and advantages."""
        sel = idx[np.concatenate(subrows)]
        n, L = logp.shape
        r_idx = torch.from_numpy(np.repeat(np.arange(len(subrows)), [len(sr) for sr in subrows]))
        t_idx = torch.from_numpy(np.concatenate([np.arange(len(sr)) for sr in subrows]))
        R, T = len(subrows), int(t_idx.max()) + 1

        def rows(x: torch.Tensor) -> torch.Tensor:  # [n, L] -> [R, T*L]
            return x.new_zeros(R, T, L).index_put((r_idx, t_idx), x).reshape(R, T * L)

        first = idx[np.array([sr[0] for sr in subrows])]
        mask = self.policy.token_mask(samples.actions[sel])
        return {"rows": rows, "sel": sel, "mask": rows(torch.ones(n, L) if mask is None else mask),
                "adv": rows(samples.advantages[sel][:, None].expand(n, L).contiguous()),
                "old": rows(samples.proximal_logp[sel]), "behaviour_logp": rows(samples.behaviour_logp[sel]),
                "group_ids": torch.from_numpy(samples.group_id[first]),
                "domain_ids": torch.from_numpy(samples.domain_id[first])}

    def _obs(self, samples: Samples, sel: np.ndarray) -> dict:
        return {"images": samples.obs.images[sel], "state": samples.obs.state[sel],
                "instruction": [samples.obs.instruction[i] for i in sel]}

    @torch.no_grad()
    def _precompute(self, samples: Samples, idx, subrows, norm: dict[str, float]):
        """A loss's whole-mini-batch aggregate (e.g. FiberPO-Domain's group and domain means): one no-grad
        forward over the mini-batch, before micro-batching, with the micro-batches' normalisers."""
        sel = idx[np.concatenate(subrows)]
        logp = self.policy.evaluate(self._obs(samples, sel), samples.actions[sel]).logp
        lay = self._rows(samples, idx, subrows, logp)
        return self.loss.precompute(lay["rows"](logp), lay["old"], lay["adv"], lay["mask"],
                                    **{k: lay[k] for k in self.loss.inputs}, loss_reduction=self.loss_reduction,
                                    num_global_tokens=norm["tokens"], num_global_seqs=norm["seqs"],
                                    **self.loss.hparams(self.algo))

    def _micro(self, samples: Samples, idx: np.ndarray, subrows: list[np.ndarray], norm: dict[str, float],
               precomputed=None) -> dict[str, float]:
        a = self.algo
        sel = idx[np.concatenate(subrows)]
        out = self.policy.evaluate(self._obs(samples, sel), samples.actions[sel])
        lay = self._rows(samples, idx, subrows, out.logp)
        extra = {} if precomputed is None else {"precomputed": precomputed}
        loss, diag = self.loss(lay["rows"](out.logp), lay["old"], lay["adv"], lay["mask"], lay,
                               loss_reduction=self.loss_reduction, num_global_tokens=norm["tokens"],
                               num_global_seqs=norm["seqs"], **self.loss.hparams(a), **extra)
        mask = lay["mask"]
        entropy = (lay["rows"](out.entropy) * mask).sum() / norm["tokens"]
        total = loss - a.ent_coef * entropy if not self.warming_up else torch.zeros(())
        v_loss = torch.zeros(())
        if a.advantage == "gae" and a.vf_coef > 0:
            v_loss, _ = value_loss(out.value, samples.returns[sel], num_global=norm["samples"])
            total = total + a.vf_coef * v_loss
        if total.requires_grad:  # nothing to learn in a warm-up step without a value loss
            total.backward()
        # loss, value loss and entropy are normalised by the whole mini-batch, so they add up over
        # micro-batches; the loss's diagnostics are micro-batch means, weighted here to add up too.
        weight = len(sel) / norm["samples"]
        # The raw importance ratio current / behaviour, whatever the loss does with it (a gated or clipped
        # ratio is bounded by construction and says nothing about how far the policy drifted).
        with torch.no_grad():
            raw = (lay["rows"](out.logp) - lay["behaviour_logp"]).exp() * mask
        stats = {"policy_loss": loss.item(), "value_loss": v_loss.item(), "entropy": entropy.item(),
                 "raw_ratio_mean": float(raw.sum()) / norm["tokens"], "raw_ratio_max": float(raw.max())}
        for k, v in diag.items():
            stats[k] = float(v.detach()) * weight
        return stats

    @property
    def loss(self) -> LossSpec:
        return loss_spec(self.algo.loss)

    @property
    def loss_reduction(self) -> str:
        return self.algo.loss_reduction or self.loss.reduction


def _is_value(param_name: str) -> bool:
    """The value head's parameters (value_lr_mult, critic_warmup): by name, as the policies call it."""
    return "value" in param_name
