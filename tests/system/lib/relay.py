#!/usr/bin/python3
"""A TCP relay on the host's loopback between an emulated board and a peer.

    relay.py PORT_FILE TARGET_FILE LOG

Listens on a free 127.0.0.1 port and writes it to PORT_FILE. Each connection
is relayed byte for byte (TLS stays end to end) to 127.0.0.1:N, where N is
what TARGET_FILE holds when the connection arrives. When TARGET_FILE changes,
the open connections to the old target are closed, so that a client holding a
kept-alive connection must connect again, to the new target (e.g. from the
healthy front to peers.sh's `stall` front: the next request is then sent in
full and never answered). LOG gets one line per event:

    open ID PORT             a connection relayed to PORT
    up ID PORT BYTES APP     client-to-peer bytes so far on it, and how many
                             of them were in TLS application_data records
                             (type 23: with TLS 1.2, as mbedTLS 2.28 speaks,
                             the HTTP request; 0 during the handshake)
    close ID PORT UP DOWN    it ended (bytes each way)
    refused ID PORT          PORT did not accept it
"""
import os
import socket
import sys
import threading

port_file, target_file, log_path = sys.argv[1:4]
log_lock = threading.Lock()
log = open(log_path, "a", buffering=1)
conns = {}  # id -> (target port, client socket, peer socket)
conns_lock = threading.Lock()


def say(line):
    with log_lock:
        log.write(line + "\n")


def target():
    try:
        with open(target_file) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


class Records:
    """Counts the payload bytes of TLS application_data records in a stream."""

    def __init__(self):
        self.head = b""  # a record header being read
        self.left = 0  # payload bytes of the current record still to come
        self.kind = 0
        self.app = 0

    def feed(self, data):
        i = 0
        while i < len(data):
            if self.left == 0:
                take = min(5 - len(self.head), len(data) - i)
                self.head += data[i:i + take]
                i += take
                if len(self.head) == 5:
                    self.kind = self.head[0]
                    self.left = int.from_bytes(self.head[3:5], "big")
                    self.head = b""
                continue
            take = min(self.left, len(data) - i)
            if self.kind == 23:
                self.app += take
            self.left -= take
            i += take


def pump(cid, port, src, dst, up, totals):
    records = Records()
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            totals[0 if up else 1] += len(data)
            if up:
                records.feed(data)
                say("up %d %d %d %d" % (cid, port, totals[0], records.app))
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(cid, client):
    port = target()
    peer = socket.socket()
    try:
        peer.connect(("127.0.0.1", port))
    except OSError:
        say("refused %d %d" % (cid, port))
        client.close()
        return
    say("open %d %d" % (cid, port))
    with conns_lock:
        conns[cid] = (port, client, peer)
    totals = [0, 0]
    t = threading.Thread(target=pump, args=(cid, port, peer, client, False, totals), daemon=True)
    t.start()
    pump(cid, port, client, peer, True, totals)
    t.join()
    with conns_lock:
        conns.pop(cid, None)
    client.close()
    peer.close()
    say("close %d %d %d %d" % (cid, port, totals[0], totals[1]))


def watch():
    """Closes connections whose target is no longer the current one."""
    ev = threading.Event()
    while True:
        ev.wait(0.1)
        now = target()
        with conns_lock:
            stale = [c for c in conns.values() if c[0] != now]
        for _, client, peer in stale:
            for s in (client, peer):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(16)
with open(port_file + ".new", "w") as f:
    f.write("%d\n" % srv.getsockname()[1])
os.rename(port_file + ".new", port_file)
threading.Thread(target=watch, daemon=True).start()
n = 0
while True:
    c, _ = srv.accept()
    n += 1
    threading.Thread(target=serve, args=(n, c), daemon=True).start()
