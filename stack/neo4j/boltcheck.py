#!/usr/bin/env python3
"""Health check for Neo4j over Bolt, standard library only.

    NEO4J_USER=neo4j NEO4J_PASSWORD=... boltcheck.py HOST PORT

Speaks Bolt 4.4 (which Neo4j 5 still accepts): handshake, HELLO with basic
auth, RUN "RETURN 1", PULL, and checks that the one record holds 1.
Exit 0: healthy. Exit 2: the server rejected the credentials (fatal, retrying
would only lock the account). Exit 1: anything else (not up yet, error).
"""

import os
import socket
import struct
import sys


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    n = len(b)
    if n < 16:
        return bytes([0x80 + n]) + b
    if n < 256:
        return b"\xd0" + bytes([n]) + b
    return b"\xd1" + struct.pack(">H", n) + b


def _map(d: dict) -> bytes:
    out = bytes([0xA0 + len(d)])
    for k, v in d.items():
        out += _str(k)
        if isinstance(v, str):
            out += _str(v)
        elif isinstance(v, int) and -16 <= v < 128:
            out += struct.pack(">b", v)
        else:
            raise TypeError(v)
    return out


def _struct(sig: int, *fields: bytes) -> bytes:
    return bytes([0xB0 + len(fields), sig]) + b"".join(fields)


def _send(sock: socket.socket, msg: bytes) -> None:
    sock.sendall(struct.pack(">H", len(msg)) + msg + b"\x00\x00")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by server")
        buf += chunk
    return buf


def _recv(sock: socket.socket) -> bytes:
    while True:
        msg = b""
        while True:
            (size,) = struct.unpack(">H", _recv_exact(sock, 2))
            if size == 0:
                break
            msg += _recv_exact(sock, size)
        if msg:  # skip NOOP keep-alive chunks
            return msg


def _failure_code(msg: bytes) -> str:
    for token in msg.split(b"\x00"):
        i = token.find(b"Neo.")
        if i >= 0:
            end = i
            while end < len(token) and (token[end:end + 1].isalnum() or token[end:end + 1] == b"."):
                end += 1
            return token[i:end].decode("ascii", "replace")
    return "unknown failure"


def check(host: str, port: int, user: str, password: str) -> int:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"\x60\x60\xb0\x17" + b"\x00\x00\x04\x04" + b"\x00" * 12)
        version = _recv_exact(sock, 4)
        if version != b"\x00\x00\x04\x04":
            print(f"unexpected Bolt version {version.hex()}")
            return 1
        _send(sock, _struct(0x01, _map({
            "user_agent": "fhirgraph-stack/1",
            "scheme": "basic",
            "principal": user,
            "credentials": password,
        })))
        reply = _recv(sock)
        if reply[1] != 0x70:
            code = _failure_code(reply)
            print(code)
            return 2 if code.startswith("Neo.ClientError.Security.") else 1
        _send(sock, _struct(0x10, _str("RETURN 1 AS ok"), _map({}), _map({})))
        _send(sock, _struct(0x3F, _map({"n": -1})))
        records = []
        for _ in range(4):
            reply = _recv(sock)
            if reply[1] == 0x71:
                records.append(reply)
            elif reply[1] == 0x70:
                if records:
                    break
            else:
                code = _failure_code(reply)
                print(code)
                return 2 if code.startswith("Neo.ClientError.Security.") else 1
        if records != [b"\xb1\x71\x91\x01"]:
            print(f"unexpected result {records!r}")
            return 1
        _send(sock, _struct(0x02))  # GOODBYE
    return 0


def main() -> int:
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 7687
    try:
        return check(host, port, os.environ.get("NEO4J_USER", "neo4j"),
                     os.environ.get("NEO4J_PASSWORD", ""))
    except (OSError, ConnectionError, struct.error, IndexError) as e:
        print(f"{type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
