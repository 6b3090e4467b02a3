#!/usr/bin/env python3
"""Consumers and the checker of the relay's integration test (ci/tests/relay.sh).

  relay_check.py redis PORT STREAM           every entry's envelope, one per line
  relay_check.py nats PORT STREAM            every message of a JetStream stream, one per line
  relay_check.py check ENVELOPES CLAIMS ACTUAL STREAM_TABLE FIRST LAST LABEL
      ENVELOPES: what a consumer received (JSON lines, any order of arrival);
      CLAIMS: claim-checked bodies (JSON lines {"outbox_id", "seq", "payload"});
      ACTUAL: the stream table's rows now (JSON lines, user columns);
      the envelopes of STREAM_TABLE, deduplicated by dedup_key, must be FIRST..LAST without a
      gap, in sequence order of first arrival, and replaying them (truncate: empty; delta:
      remove the deleted rows, add the inserted rows) from an empty table must give ACTUAL.
Only the standard library: the consumers speak RESP and the NATS protocol themselves.
"""
import base64
import collections
import decimal
import json
import socket
import sys


def loads(text):
    # Decimal: numbers compare by value, whatever digits PostgreSQL printed.
    return json.loads(text, parse_float=decimal.Decimal)


def canonical(row):
    return json.dumps(row, sort_keys=True, default=str)


# --- Redis --------------------------------------------------------------------------------
class Resp:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", int(port)), timeout=30)
        self.file = self.sock.makefile("rb")

    def command(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self.reply()

    def reply(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)[:-2]
            return data
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise RuntimeError("bad reply %r" % line)


def redis_dump(port, stream):
    r = Resp(port)
    start = "-"
    while True:
        entries = r.command("XRANGE", stream, start, "+", "COUNT", "1000")
        if not entries:
            return
        for entry_id, fields in entries:
            f = dict(zip(fields[::2], fields[1::2]))
            sys.stdout.write(f[b"envelope"].decode() + "\n")
        start = "(" + entries[-1][0].decode()


# --- NATS JetStream -----------------------------------------------------------------------
class Nats:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", int(port)), timeout=30)
        self.file = self.sock.makefile("rb")
        self.file.readline()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false}\r\nSUB _INBOX.check.* 1\r\nPING\r\n')
        while self.file.readline().strip() != b"PONG":
            pass
        self.n = 0

    def request(self, subject, body):
        self.n += 1
        reply = "_INBOX.check.%d" % self.n
        data = json.dumps(body).encode()
        self.sock.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(), len(data), data))
        while True:
            line = self.file.readline().strip()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if not line.startswith(b"MSG "):
                continue
            parts = line.split()
            payload = self.file.read(int(parts[-1]) + 2)[:-2]
            if parts[1].decode() == reply:
                return json.loads(payload)


def nats_dump(port, stream):
    n = Nats(port)
    info = n.request("$JS.API.STREAM.INFO." + stream, {})
    state = info["state"]
    for seq in range(state["first_seq"], state["last_seq"] + 1):
        m = n.request("$JS.API.STREAM.MSG.GET." + stream, {"seq": seq})
        if "message" in m:
            sys.stdout.write(base64.b64decode(m["message"]["data"]).decode() + "\n")


# --- the checker --------------------------------------------------------------------------
def check(envelopes, claims, actual, stream_table, first, last, label):
    first, last = int(first), int(last)
    bodies = {}
    for line in open(claims):
        if line.strip():
            c = loads(line)
            bodies[(c["outbox_id"], c["seq"])] = c["payload"]
    received = [loads(l) for l in open(envelopes) if l.strip()]
    received = [e for e in received if e["stream_table"] == stream_table]
    seen = {}
    order = []
    duplicates = 0
    for e in received:
        assert e["v"] == 1, "envelope version %r" % e["v"]
        key = e["dedup_key"]
        if key in seen:
            duplicates += 1
            assert canonical(seen[key]) == canonical(e), "two different messages with key %s" % key
            continue
        seen[key] = e
        order.append(e)
    seqs = [e["seq"] for e in order]
    assert seqs == sorted(seqs), "%s: out of order (first arrivals): %s" % (label, seqs[:50])
    want = list(range(first, last + 1))
    missing = sorted(set(want) - set(seqs))
    assert not missing, "%s: missing messages %s" % (label, missing[:20])
    assert seqs == want, "%s: unexpected messages %s" % (label, sorted(set(seqs) - set(want))[:20])
    rows = collections.Counter()
    claimed = 0
    for e in order:
        if e["op"] == "truncate":
            rows.clear()
            continue
        assert e["op"] == "delta", e["op"]
        body = e.get("payload")
        if body is None:
            cc = e["claim_check"]
            body = bodies[(cc["outbox_id"], cc["seq"])]
            claimed += 1
        assert len(body["deleted"]) == e["deleted_count"] and len(body["inserted"]) == e["inserted_count"]
        for r in body["deleted"]:
            k = canonical(r)
            assert rows[k] > 0, "%s: message %d deletes a row not there: %s" % (label, e["seq"], k)
            rows[k] -= 1
        for r in body["inserted"]:
            rows[canonical(r)] += 1
    rows = +rows
    want_rows = collections.Counter(canonical(loads(l)) for l in open(actual) if l.strip())
    if rows != want_rows:
        extra = list((rows - want_rows).items())[:5]
        lacking = list((want_rows - rows).items())[:5]
        raise AssertionError("%s: replay differs from %s: extra %s, lacking %s" % (label, stream_table, extra, lacking))
    print("%s: %d envelopes received, %d unique (seq %d..%d, %d by claim check), %d duplicates dropped; replay equals %s (%d rows)"
          % (label, len(received), len(order), first, last, claimed, duplicates, stream_table, sum(want_rows.values())))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "redis":
        redis_dump(*args)
    elif cmd == "nats":
        nats_dump(*args)
    elif cmd == "check":
        try:
            check(*args)
        except AssertionError as e:
            print("FAIL: %s" % e, file=sys.stderr)
            sys.exit(1)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
