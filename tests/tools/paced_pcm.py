#!/usr/bin/env python3
"""A real-time audio source for system tests: writes raw S16_LE PCM (a tone)
to PATH (a FIFO the daemon's file source reads) at RATE_HZ frames a second,
paced by the monotonic clock in 20 ms blocks, until SIGTERM or SIGINT; then
it closes PATH, which the reader sees as the end of its source.

    paced_pcm.py PATH [RATE_HZ [CHANNELS]]
"""
import math
import os
import signal
import struct
import sys
import time

stop = False


def on_signal(_sig, _frame):
    global stop
    stop = True


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: paced_pcm.py PATH [RATE_HZ [CHANNELS]]")
    path = sys.argv[1]
    rate = int(sys.argv[2]) if len(sys.argv) > 2 else 16000
    channels = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    block = rate // 50  # 20 ms
    # one block of a 440 Hz tone (a whole number of periods at 16 kHz and 48 kHz: 20 ms = 8.8)
    frames = [int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(block)]
    data = b"".join(struct.pack("<" + "h" * channels, *([s] * channels)) for s in frames)
    fd = os.open(path, os.O_WRONLY)  # a FIFO: waits for the reader
    start = time.monotonic()
    sent = 0
    try:
        while not stop:
            due = start + sent * block / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
                continue
            os.write(fd, data)
            sent += 1
    except (BrokenPipeError, InterruptedError):
        pass
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
