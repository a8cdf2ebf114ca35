#!/usr/bin/env python3
"""The Twisted half of scripts/bench/amp-vs-twisted: the same BenchEcho command as
amp-bench (payload String, n Integer, echoed back), server and client.

    twisted_amp_bench.py server [--port N]
    twisted_amp_bench.py client --port N [--concurrency C] [--seconds S] [--payload BYTES]
"""
import argparse
import sys
import time

from twisted.internet import defer, endpoints, reactor
from twisted.internet.protocol import Factory
from twisted.protocols import amp


class BenchEcho(amp.Command):
    commandName = b"BenchEcho"
    arguments = [(b"payload", amp.String()), (b"n", amp.Integer())]
    response = [(b"payload", amp.String()), (b"n", amp.Integer())]


class Echo(amp.AMP):
    @BenchEcho.responder
    def echo(self, payload, n):
        return {"payload": payload, "n": n}


def serve(args):
    ep = endpoints.TCP4ServerEndpoint(reactor, args.port, interface="127.0.0.1")

    def listening(port):
        print(f"listening port={port.getHost().port}", flush=True)

    ep.listen(Factory.forProtocol(Echo)).addCallback(listening)
    reactor.run()


@defer.inlineCallbacks
def client(args):
    proto = yield endpoints.connectProtocol(
        endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", args.port), amp.AMP())
    payload = b"a" * args.payload
    for n in range(200):
        yield proto.callRemote(BenchEcho, payload=payload, n=n)
    deadline = time.monotonic() + args.seconds
    start = time.monotonic()

    @defer.inlineCallbacks
    def worker():
        calls = 0
        while time.monotonic() < deadline:
            r = yield proto.callRemote(BenchEcho, payload=payload, n=calls)
            assert r["n"] == calls and len(r["payload"]) == len(payload)
            calls += 1
        return calls

    counts = yield defer.gatherResults([worker() for _ in range(args.concurrency)])
    elapsed = time.monotonic() - start
    total = sum(counts)
    print(f"calls={total} seconds={elapsed:.3f} calls_per_second={int(total / elapsed)}", flush=True)
    proto.transport.loseConnection()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["server", "client"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--payload", type=int, default=128)
    args = ap.parse_args()
    if args.mode == "server":
        serve(args)
    else:
        def run():
            d = client(args)
            d.addErrback(lambda f: (f.printTraceback(), None))
            d.addBoth(lambda _: reactor.stop())
        reactor.callWhenRunning(run)
        reactor.run()


if __name__ == "__main__":
    sys.exit(main())
