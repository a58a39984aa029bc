"""MLA's compressed KV cache: per layer and token, the normalised KV latent and the rope key, not K/V.

Per token and layer that is ``kv_lora_rank + qk_rope_head_dim`` numbers (576 for the released config)
instead of ``H * (qk_head_dim + v_head_dim)`` (10,240) for full K/V: the point of MLA.

Rows of a batch normally hold the same number of tokens: slot j of every row is position j. Batched
speculative decoding keeps a different number of drafts per row (:meth:`MLACache.commit`); the rows then
become *ragged*: every forward still writes T slots to every row, ``valid`` marks the slots that hold a
kept token, and ``lengths`` counts each row's tokens (the position of its next token). A ragged cache
gives each forward an attention mask (:meth:`begin`) and per-row positions for RoPE.
"""
from __future__ import annotations

import torch


class MLACache:
    """Preallocated buffers for ``num_layers`` MLA layers, grown by doubling when full.

    ``length`` counts the used slots (= positions while not ragged). A forward with cache calls
    :meth:`begin`, writes its T new slots at ``[length, length + T)`` in every layer and then calls
    :meth:`advance`; :meth:`truncate` rolls back (speculative decoding drops rejected draft slots with it)
    and :meth:`commit` keeps a different number of the last slots per row.
    """

    def __init__(self, num_layers: int, batch_size: int, kv_lora_rank: int, rope_dim: int,
                 capacity: int = 256, device=None, dtype=torch.float32):
        self.length = 0
        self.latent = [torch.zeros(batch_size, capacity, kv_lora_rank, device=device, dtype=dtype)
                       for _ in range(num_layers)]
        self.k_rope = [torch.zeros(batch_size, capacity, rope_dim, device=device, dtype=dtype)
                       for _ in range(num_layers)]
        self.valid: torch.Tensor | None = None  # [B, capacity] bool, once ragged
        self.lengths: torch.Tensor | None = None  # [B] long tokens per row, once ragged
        self.mask: torch.Tensor | None = None  # [B, 1, T, length + T] of the running forward, when ragged
        self.rows: torch.Tensor | None = None  # the original batch row of each row, once rows left (keep_rows)

    @property
    def capacity(self) -> int:
        return self.latent[0].shape[1]

    @property
    def ragged(self) -> bool:
        return self.lengths is not None

    def begin(self, T: int) -> torch.Tensor | None:
        """Before a forward of T new slots: None while not ragged (positions are ``length + t``), else the
        per-row positions [B, T] of the new tokens, and :attr:`mask` is set to the attention mask
        [B, 1, T, length + T] (query t sees the row's valid slots and new slots 0..t)."""
        if not self.ragged:
            self.mask = None
            return None
        end = self.length + T
        if end > self.capacity:
            self._grow(end)
        new = torch.ones(T, T, dtype=torch.bool, device=self.valid.device).tril()
        B = self.valid.shape[0]
        self.mask = torch.cat([self.valid[:, None, :self.length].expand(B, T, self.length),
                               new.expand(B, T, T)], dim=2)[:, None]
        return self.lengths[:, None] + torch.arange(T, device=self.lengths.device)

    def update(self, layer: int, latent: torch.Tensor, k_rope: torch.Tensor):
        """Write the new slots (latent [B, T, C], k_rope [B, T, R]) of one layer at ``length``.

        Returns the layer's whole cache including them: latent [B, length + T, C], k_rope [B, length + T, R].
        """
        end = self.length + latent.shape[1]
        if end > self.capacity:
            self._grow(end)
        self.latent[layer][:, self.length:end] = latent
        self.k_rope[layer][:, self.length:end] = k_rope
        return self.latent[layer][:, :end], self.k_rope[layer][:, :end]

    def advance(self, n: int) -> None:
        if self.ragged:
            self.valid[:, self.length:self.length + n] = True
            self.lengths += n
        self.length += n

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` slots (rollback of slots every row wrote); later writes overwrite the rest."""
        if not 0 <= n <= self.length:
            raise ValueError(f"MLACache.truncate({n}): must be in [0, length={self.length}]")
        if self.ragged:
            self.lengths -= self.length - n
        self.length = n

    def commit(self, start: int, kept: torch.Tensor) -> None:
        """Of the slots ``[start, length)`` every row wrote, row b keeps the first ``kept[b]`` (kept [B] long,
        >= 1). Equal counts truncate; different ones make (or keep) the cache ragged."""
        if not self.ragged and (kept.shape[0] == 1 or bool((kept == kept[0]).all())):
            self.truncate(start + int(kept[0]))
            return
        if not self.ragged:
            self.valid = torch.zeros(kept.shape[0], self.capacity, dtype=torch.bool, device=kept.device)
            self.valid[:, :self.length] = True
            self.lengths = torch.full_like(kept, self.length)
        slots = torch.arange(self.length - start, device=kept.device)
        self.valid[:, start:self.length] = slots[None] < kept[:, None]
        self.lengths -= (self.length - start) - kept

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only batch rows ``rows`` [n] (long, increasing) in every buffer: rows that are done decoding
        leave, so later forwards run on fewer rows."""
        self.rows = rows if self.rows is None else self.rows[rows]
        self.latent = [t[rows] for t in self.latent]
        self.k_rope = [t[rows] for t in self.k_rope]
        if self.ragged:
            self.valid, self.lengths = self.valid[rows], self.lengths[rows]

    def _grow(self, needed: int) -> None:
        cap = max(needed, 2 * self.capacity)
        def grow(t):
            out = t.new_zeros(t.shape[0], cap, *t.shape[2:])
            out[:, :self.length] = t[:, :self.length]
            return out
        self.latent = [grow(t) for t in self.latent]
        self.k_rope = [grow(t) for t in self.k_rope]
        if self.valid is not None:
            self.valid = grow(self.valid)
