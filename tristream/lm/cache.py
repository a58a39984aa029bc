"""MLA's compressed KV cache: per layer and token, the normalised KV latent and the rope key, not K/V.

Per token and layer that is ``kv_lora_rank + qk_rope_head_dim`` numbers (576 for the released config)
instead of ``H * (qk_head_dim + v_head_dim)`` (10,240) for full K/V: the point of MLA.
"""
from __future__ import annotations

import torch


class MLACache:
    """Preallocated buffers for ``num_layers`` MLA layers, grown by doubling when full.

    ``length`` counts the committed positions. A forward with cache writes its T new positions at
    ``[length, length + T)`` in every layer and then calls :meth:`advance`; :meth:`truncate` rolls back
    (speculative decoding drops rejected draft positions with it).
    """

    def __init__(self, num_layers: int, batch_size: int, kv_lora_rank: int, rope_dim: int,
                 capacity: int = 256, device=None, dtype=torch.float32):
        self.length = 0
        self.latent = [torch.zeros(batch_size, capacity, kv_lora_rank, device=device, dtype=dtype)
                       for _ in range(num_layers)]
        self.k_rope = [torch.zeros(batch_size, capacity, rope_dim, device=device, dtype=dtype)
                       for _ in range(num_layers)]

    @property
    def capacity(self) -> int:
        return self.latent[0].shape[1]

    def update(self, layer: int, latent: torch.Tensor, k_rope: torch.Tensor):
        """Write the new positions (latent [B, T, C], k_rope [B, T, R]) of one layer at ``length``.

        Returns the layer's whole cache including them: latent [B, length + T, C], k_rope [B, length + T, R].
        """
        end = self.length + latent.shape[1]
        if end > self.capacity:
            self._grow(end)
        self.latent[layer][:, self.length:end] = latent
        self.k_rope[layer][:, self.length:end] = k_rope
        return self.latent[layer][:, :end], self.k_rope[layer][:, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` positions (rollback); later writes overwrite the rest."""
        if not 0 <= n <= self.length:
            raise ValueError(f"MLACache.truncate({n}): must be in [0, length={self.length}]")
        self.length = n

    def _grow(self, needed: int) -> None:
        cap = max(needed, 2 * self.capacity)
        def grow(t):
            out = t.new_zeros(t.shape[0], cap, t.shape[2])
            out[:, :self.length] = t[:, :self.length]
            return out
        self.latent = [grow(t) for t in self.latent]
        self.k_rope = [grow(t) for t in self.k_rope]
