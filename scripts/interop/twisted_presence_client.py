#!/usr/bin/env python3
"""A Twisted AMP client, written with Twisted's own amp module, that checks a Vertex
presence server's clear-text commands: identify (a valid X.509 CA certificate for the
domain), Who-Am-I (our own address and port) and source-ip (our IP).

    python3 scripts/interop/twisted_presence_client.py HOST:PORT DOMAIN

Prints one PASS/FAIL line per check; exits 0 when all pass.
"""
import sys

from cryptography import x509
from cryptography.x509.oid import NameOID
from twisted.internet import defer, endpoints, reactor, task
from twisted.protocols import amp


class Identify(amp.Command):
    commandName = b"identify"
    arguments = [(b"subject", amp.Unicode())]  # Vertex's Q2QAddress: the address text
    response = [(b"certificate", amp.String())]  # Vertex's Cert: DER bytes


class WhoAmI(amp.Command):
    commandName = b"Who-Am-I"
    arguments = []
    response = [(b"address", amp.Unicode())]  # Vertex's HostPort: "host:port"


class SourceIP(amp.Command):
    commandName = b"source-ip"
    arguments = []
    response = [(b"ip", amp.String())]


@defer.inlineCallbacks
def main(reactor, server, domain):
    host, port = server.rsplit(":", 1)
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, int(port))
    protocol = yield endpoints.connectProtocol(endpoint, amp.AMP())
    failures = []

    def check(name, ok, detail):
        print(("PASS " if ok else "FAIL ") + name + ": " + detail, flush=True)
        if not ok:
            failures.append(name)

    answer = yield protocol.callRemote(Identify, subject=domain)
    cert = x509.load_der_x509_certificate(answer["certificate"])
    subject_cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    issuer_cn = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    check("identify", subject_cn == domain and issuer_cn == domain and is_ca,
          "certificate subject CN=%s issuer CN=%s CA=%s, valid until %s" % (subject_cn, issuer_cn, is_ca, cert.not_valid_after_utc))
    try:
        cert.verify_directly_issued_by(cert)
        check("identify: self-signed", True, "its signature verifies with its own key")
    except Exception as error:
        check("identify: self-signed", False, repr(error))

    try:
        yield protocol.callRemote(Identify, subject="not-served.example")
        check("identify for another domain", False, "answered")
    except amp.UnknownRemoteError as error:
        check("identify for another domain", "UnknownDomain" in str(error) or "not the presence server" in str(error), str(error))
    except Exception as error:  # the server answers with an error code Twisted does not know
        check("identify for another domain", "not the presence server" in str(error), repr(error))

    local = protocol.transport.getHost()
    who = yield protocol.callRemote(WhoAmI)
    check("Who-Am-I", who["address"] == "%s:%d" % (local.host, local.port), "%s (our socket: %s:%d)" % (who["address"], local.host, local.port))

    ip = yield protocol.callRemote(SourceIP)
    check("source-ip", ip["ip"] == local.host.encode(), ip["ip"].decode())

    protocol.transport.loseConnection()
    print("%d failed" % len(failures), flush=True)
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    task.react(main, sys.argv[1:3])
