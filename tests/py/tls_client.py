#!/usr/bin/env python3
"""An independent TLS client (CPython's ssl module, i.e. OpenSSL) for tests/tls.rs.

It reads one JSON command per line on stdin and answers each with one JSON line on
stdout, so a test can hold TLS connections open across other steps (a reload, a bad
client next to a good one). Every blocking call has a timeout; an error is an answer
({"ok": false, "error": ...}), never a crash.

Commands (`id` names a connection, `ctx` an SSLContext: resumption needs the same one):
  {"op": "connect", "id", "port", "sni" (null: no SNI), "ctx", "cafile", "min", "max",
   "ciphers", "alpn", "session" (a saved session's name), "timeout"}
      -> {ok, version, alpn, cipher, reused, cert (the peer certificate, PEM)}
  {"op": "send", "id", "data"}                          (data: latin-1 text)
  {"op": "read", "id", "count", "timeout", "head"}      -> {ok, responses: [...]}
        each {status, headers: [[name, value]], body (first 4096 chars), body_len,
        body_sha256}
  {"op": "session", "id", "name"}                       -> {ok, has_ticket}
  {"op": "wait_close", "id", "timeout"}                 -> {ok, closed, extra}
  {"op": "close", "id"}
"""

import hashlib
import json
import socket
import ssl
import sys
import time
import warnings

# TLS 1.0/1.1 are asked for on purpose (to see them refused).
warnings.filterwarnings("ignore", category=DeprecationWarning)

VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}

contexts = {}
conns = {}
sessions = {}


def context(cmd):
    name = cmd.get("ctx")
    if name is not None and name in contexts:
        return contexts[name]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cmd.get("cafile"):
        ctx.load_verify_locations(cmd["cafile"])
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = bool(cmd.get("sni"))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cmd.get("ciphers"):
        ctx.set_ciphers(cmd["ciphers"])
    if cmd.get("min"):
        ctx.minimum_version = VERSIONS[cmd["min"]]
    if cmd.get("max"):
        ctx.maximum_version = VERSIONS[cmd["max"]]
    if cmd.get("alpn") is not None:
        ctx.set_alpn_protocols(cmd["alpn"])
    if name is not None:
        contexts[name] = ctx
    return ctx


def connect(cmd):
    ctx = context(cmd)
    timeout = cmd.get("timeout", 5)
    raw = socket.create_connection(("127.0.0.1", cmd["port"]), timeout=timeout)
    kwargs = {}
    if cmd.get("session"):
        kwargs["session"] = sessions[cmd["session"]]
    try:
        sock = ctx.wrap_socket(raw, server_hostname=cmd.get("sni"), **kwargs)
    except BaseException:
        raw.close()
        raise
    conns[cmd["id"]] = {"sock": sock, "buf": bytearray()}
    der = sock.getpeercert(binary_form=True)
    return {
        "ok": True,
        "version": sock.version(),
        "alpn": sock.selected_alpn_protocol(),
        "cipher": sock.cipher()[0],
        "reused": sock.session_reused,
        "cert": ssl.DER_cert_to_PEM_cert(der) if der else None,
    }


def fill(conn, deadline):
    """Reads more bytes; False at end of stream."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    conn["sock"].settimeout(remaining)
    data = conn["sock"].recv(65536)
    if not data:
        return False
    conn["buf"] += data
    return True


def read_response(conn, deadline, head_only):
    buf = conn["buf"]
    while b"\r\n\r\n" not in buf:
        if not fill(conn, deadline):
            raise EOFError("closed before a response head (%d bytes)" % len(buf))
        buf = conn["buf"]
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end]).decode("latin-1")
    del buf[: end + 4]
    lines = head.split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append([name.strip(), value.strip()])
    lower = {k.lower(): v for k, v in headers}
    body = bytearray()
    if head_only or status in (204, 304) or 100 <= status < 200:
        pass
    elif "chunked" in lower.get("transfer-encoding", "").lower():
        while True:
            while b"\r\n" not in conn["buf"]:
                if not fill(conn, deadline):
                    raise EOFError("closed inside a chunked body")
            i = conn["buf"].index(b"\r\n")
            size = int(bytes(conn["buf"][:i]).split(b";")[0], 16)
            del conn["buf"][: i + 2]
            while len(conn["buf"]) < size + 2:
                if not fill(conn, deadline):
                    raise EOFError("closed inside a chunk")
            body += conn["buf"][:size]
            del conn["buf"][: size + 2]
            if size == 0:
                break
    elif "content-length" in lower:
        n = int(lower["content-length"])
        while len(conn["buf"]) < n:
            if not fill(conn, deadline):
                raise EOFError("closed inside a body (%d of %d)" % (len(conn["buf"]), n))
        body += conn["buf"][:n]
        del conn["buf"][:n]
    else:
        while fill(conn, deadline):
            pass
        body += conn["buf"]
        conn["buf"].clear()
    return {
        "status": status,
        "headers": headers,
        "body": bytes(body[:4096]).decode("latin-1"),
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }


def read(cmd):
    conn = conns[cmd["id"]]
    deadline = time.monotonic() + cmd.get("timeout", 5)
    out = []
    try:
        for _ in range(cmd.get("count", 1)):
            out.append(read_response(conn, deadline, cmd.get("head", False)))
    except BaseException as e:  # what arrived so far, and why it stopped
        return {"ok": False, "responses": out, "error": "%s: %s" % (type(e).__name__, e)}
    return {"ok": True, "responses": out}


def wait_close(cmd):
    conn = conns[cmd["id"]]
    deadline = time.monotonic() + cmd.get("timeout", 5)
    extra = len(conn["buf"])
    try:
        while fill(conn, deadline):
            extra = len(conn["buf"])
    except (TimeoutError, socket.timeout):
        return {"ok": True, "closed": False, "extra": extra}
    except (OSError, ssl.SSLError) as e:
        return {"ok": True, "closed": True, "extra": extra, "how": str(e)}
    return {"ok": True, "closed": True, "extra": extra, "how": "eof"}


def handle(cmd):
    op = cmd["op"]
    if op == "connect":
        return connect(cmd)
    if op == "send":
        conns[cmd["id"]]["sock"].sendall(cmd["data"].encode("latin-1"))
        return {"ok": True}
    if op == "read":
        return read(cmd)
    if op == "session":
        session = conns[cmd["id"]]["sock"].session
        if session is None:
            return {"ok": False, "error": "no session"}
        sessions[cmd["name"]] = session
        return {"ok": True, "has_ticket": session.has_ticket}
    if op == "wait_close":
        return wait_close(cmd)
    if op == "close":
        conn = conns.pop(cmd["id"], None)
        if conn:
            conn["sock"].close()
        return {"ok": True}
    return {"ok": False, "error": "unknown op %r" % op}


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            answer = handle(json.loads(line))
        except BaseException as e:
            answer = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
