"""Observation encoders of the VLA: FiLM-conditioned CNN, instruction encoder, proprio encoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tokenizer import PAD_ID


def mlp(sizes: list[int], act: type[nn.Module] = nn.GELU, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_act:
            layers.append(act())
    return nn.Sequential(*layers)


class InstructionEncoder(nn.Module):
    """Token ids [B, L] -> word embeddings -> (optional self-attention) -> masked mean -> MLP -> [B, lang_dim].

    kind "bow": a bag of words, blind to word order. "Put the red block on the blue plate" and "put the blue
    block on the red plate" then encode the same, so the policy must work out from the image which named
    colour is the block. kind "bigram" also mean-pools embeddings of adjacent word pairs, hashed into
    ``bigram_buckets`` rows (fastText-style), so "red block" and "blue plate" are features of their own.
    kind "attention" adds position embeddings and one pre-norm self-attention block before pooling, so each
    word's vector carries its role in the sentence.
    """

    def __init__(self, vocab_size: int, word_dim: int, lang_dim: int, kind: str = "bow", max_len: int = 16,
                 heads: int = 4, bigram_buckets: int = 1024):
        super().__init__()
        self.kind = kind
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=PAD_ID)
        if kind == "bigram":
            self.bigram_buckets = bigram_buckets
            self.bigram = nn.Embedding(bigram_buckets, word_dim)
        if kind == "attention":
            if word_dim % heads:
                raise ValueError(f"word_dim {word_dim} must be divisible by the {heads} attention heads")
            self.heads = heads
            self.pos = nn.Parameter(torch.randn(max_len, word_dim) * 0.02)
            self.norm1, self.norm2 = nn.LayerNorm(word_dim), nn.LayerNorm(word_dim)
            self.qkv = nn.Linear(word_dim, 3 * word_dim)
            self.proj = nn.Linear(word_dim, word_dim)
            self.ff = mlp([word_dim, 2 * word_dim, word_dim], last_act=False)
        elif kind not in ("bow", "bigram"):
            raise ValueError(f"unknown instruction encoder {kind!r}; valid: 'attention', 'bigram', 'bow'")
        self.mlp = mlp([word_dim, lang_dim, lang_dim])

    def _attend(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """One pre-norm transformer block over [B, L, D]; padding keys are masked out."""
        b, n, d = x.shape
        x = x + self.pos[:n]
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # an all-padding row (empty instruction) would softmax over nothing: let it see its first slot
        keys = keep | (~keep.any(1, keepdim=True) & (torch.arange(n, device=x.device) == 0))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=keys[:, None, None, :])
        x = x + self.proj(att.transpose(1, 2).reshape(b, n, d))
        return x + self.ff(self.norm2(x))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = ids != PAD_ID  # [B, L]
        x = self.embed(ids)
        if self.kind == "attention":
            x = self._attend(x, keep)
        mask = keep.unsqueeze(-1).to(x.dtype)
        pooled = (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # empty text -> zeros
        if self.kind == "bigram":
            pooled = pooled + self._bigrams(ids, keep)
        return self.mlp(pooled)

    def _bigrams(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Mean embedding of the adjacent non-padding word pairs of [B, L] ids -> [B, word_dim]."""
        pair = keep[:, 1:] & keep[:, :-1]  # [B, L-1]
        rows = (ids[:, :-1] * self.vocab_size + ids[:, 1:]) % self.bigram_buckets
        m = pair.unsqueeze(-1).to(self.bigram.weight.dtype)
        return (self.bigram(rows) * m).sum(1) / m.sum(1).clamp(min=1.0)


class RunningNorm(nn.Module):
    """Running mean/var of the input, used to standardise state; ``update`` moves them (Policy.observe calls
    it), a forward pass never does."""

    def __init__(self, dim: int, eps: float = 1e-5, clip: float = 10.0):
        super().__init__()
        self.eps, self.clip = eps, clip
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros(()))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:  # parallel (Chan et al.) mean/var merge
        n = x.shape[0]
        if n == 0:
            return
        b_mean, b_var = x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = b_mean - self.mean
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + b_var * n + delta**2 * self.count * n / total) / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / torch.sqrt(self.var + self.eps)).clamp(-self.clip, self.clip)


class ProprioEncoder(nn.Module):
    def __init__(self, state_dim: int, out_dim: int, normalize: bool):
        super().__init__()
        self.norm = RunningNorm(state_dim) if normalize else nn.Identity()
        self.mlp = mlp([state_dim, out_dim, out_dim])

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(state))


class SpatialSoftmax(nn.Module):
    """[N, C, H, W] -> expected (x, y) in [-1, 1] of each channel's softmax over pixels: [N, 2C]."""

    def __init__(self):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        attn = torch.softmax(x.flatten(2) / self.log_temperature.exp(), dim=-1).view(n, c, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        ex = (attn.sum(2) * xs).sum(-1)  # marginal over rows, then expectation over columns
        ey = (attn.sum(3) * ys).sum(-1)
        return torch.cat([ex, ey], dim=-1)


class FiLMConvEncoder(nn.Module):
    """A small CNN shared across cameras whose every layer is FiLM-modulated by a conditioning vector.

    The conditioning vector is the instruction embedding plus a learned per-camera embedding, so the
    same weights serve every camera while language decides which features (which colour) light up.
    images uint8 [B, n_cams, H, W, 3], cond [B, cond_dim] -> features [B, n_cams * feat_per_cam].
    """

    def __init__(
        self,
        n_cams: int,
        cond_dim: int,
        channels: tuple[int, ...],
        strides: tuple[int, ...],
        group_norm: bool,
        pool: str,
    ):
        super().__init__()
        self.n_cams = n_cams
        self.channels = channels
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        c_in = 3
        for i, (c, s) in enumerate(zip(channels, strides)):
            k = 5 if i == 0 else 3
            self.convs.append(nn.Conv2d(c_in, c, kernel_size=k, stride=s, padding=k // 2))
            self.norms.append(nn.GroupNorm(8, c, affine=False) if group_norm else nn.Identity())
            c_in = c
        self.cam_embed = nn.Parameter(torch.zeros(n_cams, cond_dim))
        # FiLM generator: one linear for all layers' (gamma, beta); small init = near-identity modulation
        self.film = nn.Linear(cond_dim, 2 * sum(channels))
        nn.init.normal_(self.film.weight, std=0.02)
        nn.init.zeros_(self.film.bias)
        self.pool = SpatialSoftmax() if pool == "spatial_softmax" else None
        self.feat_per_cam = channels[-1] * (2 if pool == "spatial_softmax" else 1)
        self.out_dim = n_cams * self.feat_per_cam

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, n, h, w, _ = images.shape
        # Contiguous NCHW (transposed while still uint8, the cheaper copy): the permuted view is channels-last,
        # where CPU GroupNorm and its backward are several times slower (a one-thread learner update: ~14% faster).
        x = images.reshape(b * n, h, w, 3).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
        cond = (cond.unsqueeze(1) + self.cam_embed.unsqueeze(0)).reshape(b * n, -1)  # [B*n, cond_dim]
        film = torch.split(self.film(cond), [2 * c for c in self.channels], dim=-1)
        for conv, norm, fb in zip(self.convs, self.norms, film):
            gamma, beta = fb[:, :, None, None].chunk(2, dim=1)
            x = F.relu_(torch.addcmul(beta, norm(conv(x)), gamma + 1.0))  # FiLM: x * (1 + gamma) + beta
        feats = self.pool(x) if self.pool is not None else x.mean(dim=(2, 3))
        return feats.reshape(b, n * self.feat_per_cam)
