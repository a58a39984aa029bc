"""Process channels: a read that can always time out, even past a half-written message."""
import multiprocessing as mp
import os
import struct

import pytest

from tristream.runtime.channels import Empty, ProcessChannel, ThreadedReader


def test_a_threaded_reader_delivers_in_order_and_times_out():
    ch = ProcessChannel(mp.get_context("spawn"), maxsize=4)
    reader = ThreadedReader(ch)
    for i in range(3):
        ch.put(i)
    assert [reader.get(timeout=5) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(Empty):
        reader.get(timeout=0.2)
    reader.abandon()


def test_half_a_message_does_not_block_the_reader_for_good():
    """What a writer killed mid-message leaves: a header for 1000 bytes and 10 of them. A plain queue read would
    block forever; the threaded reader times out, and once the channel is given up its thread ends."""
    ch = ProcessChannel(mp.get_context("spawn"), maxsize=4)
    reader = ThreadedReader(ch)
    os.write(ch._queue._writer.fileno(), struct.pack("!i", 1000) + b"x" * 10)
    with pytest.raises(Empty):
        reader.get(timeout=1.0)
    reader.abandon()  # this process was the last writer: the stuck read sees EOF
    reader._thread.join(timeout=5)
    assert not reader._thread.is_alive()
