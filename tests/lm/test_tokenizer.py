import torch
from hypothesis import given, strategies as st

from tristream.lm.tokenizer import ByteTokenizer

tok = ByteTokenizer()


@given(st.text(max_size=40))
def test_roundtrip_any_text(text):
    assert tok.decode(tok.encode(text, bos=True, eos=True)) == text


def test_specials_follow_the_bytes():
    assert (tok.PAD, tok.BOS, tok.EOS, tok.vocab_size) == (256, 257, 258, 259)
    assert tok.encode("1+2=", bos=True) == [tok.BOS, ord("1"), ord("+"), ord("2"), ord("=")]


def test_decode_stops_at_eos_and_drops_specials():
    ids = [tok.BOS] + tok.encode("42") + [tok.EOS] + tok.encode("junk")
    assert tok.decode(ids) == "42"
    assert tok.decode(ids, stop_at_eos=False) == "42junk"
    assert tok.decode([0xFF, ord("a")]) == "\ufffda"  # invalid UTF-8 never raises


def test_batch_pads_right_or_left():
    b = tok.batch([[1, 2, 3], [4]])
    assert b.tolist() == [[1, 2, 3], [4, tok.PAD, tok.PAD]]
    assert tok.batch([[1, 2, 3], [4]], pad_left=True)[1].tolist() == [tok.PAD, tok.PAD, 4]
    assert b.dtype == torch.long
