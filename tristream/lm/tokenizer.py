"""A byte-level tokenizer: ids 0..255 are the UTF-8 bytes of the text, then three specials.

Byte level means every string round-trips and no vocabulary file exists (nothing to download or ship).
The specials sit after the bytes so that a byte's id is the byte itself:

    PAD = 256   padding (never a target: its loss mask is 0)
    BOS = 257   begins every sequence
    EOS = 258   ends an answer; generation stops on it

    >>> tok = ByteTokenizer()
    >>> tok.decode(tok.encode("12+34=", bos=True))
    '12+34='
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    import torch


class ByteTokenizer:
    PAD, BOS, EOS = 256, 257, 258
    vocab_size = 259

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text``; optionally framed by BOS / EOS."""
        ids = list(text.encode("utf-8"))
        return ([self.BOS] if bos else []) + ids + ([self.EOS] if eos else [])

    def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> str:
        """Text of ``ids``: specials dropped, cut at the first EOS (unless ``stop_at_eos=False``).
        Invalid UTF-8 (a model can emit any byte) decodes with replacement characters, never an error."""
        out = bytearray()
        for i in ids:
            i = int(i)
            if i == self.EOS and stop_at_eos:
                break
            if 0 <= i < 256:
                out.append(i)
        return out.decode("utf-8", errors="replace")

    def batch(self, seqs: Sequence[Sequence[int]], *, pad_left: bool = False) -> "torch.Tensor":
        """Pad id lists to one LongTensor [B, T_max] with PAD (right padding unless ``pad_left``)."""
        import torch  # here: text envs decode with this class in processes that never load torch
        if not seqs:
            raise ValueError("batch() needs at least one sequence")
        t = max(len(s) for s in seqs)
        out = torch.full((len(seqs), t), self.PAD, dtype=torch.long)
        for b, s in enumerate(seqs):
            if len(s):
                if pad_left:
                    out[b, t - len(s):] = torch.tensor(list(s), dtype=torch.long)
                else:
                    out[b, :len(s)] = torch.tensor(list(s), dtype=torch.long)
        return out


# Ids a generated completion never contains (it is bytes and EOS): PAD marks its end, BOS starts prompts.
NEVER_SAMPLED = (ByteTokenizer.PAD, ByteTokenizer.BOS)
