"""A tiny, deterministic word-level tokenizer for robot instructions.

Lower-cases, splits on anything that is not a letter a-z, maps known words to ids from a fixed base
vocabulary and hashes unknown words (crc32, stable across processes) into ``oov_buckets`` extra ids, so
every string tokenizes the same way everywhere. Id 0 is padding.

BASE_WORDS is APPEND-ONLY: saved policies depend on the ids, so never reorder or delete entries.
"""
from __future__ import annotations

import re
import zlib

import torch

PAD_ID = 0

BASE_WORDS: tuple[str, ...] = (
    # colours
    "red", "green", "blue", "yellow", "purple", "orange", "cyan", "white", "black", "pink", "brown", "gray",
    "grey", "magenta",
    # verbs
    "reach", "pick", "put", "place", "push", "move", "lift", "grasp", "grab", "take", "drop", "release",
    "open", "close", "stack", "slide", "touch", "go", "bring", "carry", "hold", "raise", "lower", "turn",
    "rotate", "press", "pull", "set", "get", "hit", "insert", "remove", "sort", "fetch", "lay", "stop",
    # objects and places
    "object", "objects", "block", "blocks", "cube", "cubes", "box", "boxes", "plate", "pad", "zone", "target",
    "goal", "area", "region", "table", "bowl", "cup", "mug", "ball", "drawer", "door", "button", "handle",
    "gripper", "hand", "arm", "bin", "basket", "tray", "item", "thing", "one", "peg", "hole", "marker",
    "square", "circle", "top", "bottom", "side", "corner", "center", "centre", "middle", "edge", "spot",
    "location", "position",
    # directions and relations
    "left", "right", "front", "back", "behind", "up", "down", "above", "below", "under", "over", "next",
    "near", "far", "between", "beside", "inside", "outside", "forward", "backward", "away", "toward",
    "towards", "onto", "off", "out", "higher", "closer", "farther", "small", "large", "big",
    # function words
    "the", "a", "an", "to", "on", "in", "into", "of", "and", "or", "with", "at", "by", "from", "for", "it",
    "its", "this", "that", "then", "is", "are", "be", "your", "you", "please", "all", "other", "same",
    "first", "second", "third", "last", "again", "not", "no", "so", "as", "until", "while", "using",
)


class Tokenizer:
    def __init__(self, max_len: int = 16, oov_buckets: int = 64):
        self.max_len = max_len
        self.oov_buckets = oov_buckets
        self.vocab: dict[str, int] = {}
        for w in BASE_WORDS:  # duplicates keep their first id
            self.vocab.setdefault(w, len(self.vocab) + 1)
        self.num_base = len(self.vocab) + 1  # ids [0, num_base) are pad + known words
        self.vocab_size = self.num_base + oov_buckets
        self._cache: dict[str, tuple[int, ...]] = {}

    def word_id(self, word: str) -> int:
        if word in self.vocab:
            return self.vocab[word]
        return self.num_base + zlib.crc32(word.encode("utf-8")) % self.oov_buckets

    def encode(self, text: str) -> tuple[int, ...]:
        """Ids of ``text`` padded/truncated to max_len (cached: instructions repeat a lot)."""
        ids = self._cache.get(text)
        if ids is None:
            words = re.findall(r"[a-z]+", text.lower())[: self.max_len]
            ids = tuple(self.word_id(w) for w in words) + (PAD_ID,) * (self.max_len - len(words))
            if len(self._cache) >= 65536:  # unbounded streams of distinct strings: start afresh
                self._cache.clear()
            self._cache[text] = ids
        return ids

    def __call__(self, texts: list[str], device: torch.device | str | None = None) -> torch.Tensor:
        """Token ids, long [B, max_len]; padding is PAD_ID (0)."""
        return torch.tensor([self.encode(t) for t in texts], dtype=torch.long, device=device).reshape(
            len(texts), self.max_len
        )
