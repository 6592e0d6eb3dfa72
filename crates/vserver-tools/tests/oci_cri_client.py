"""A small CRI client for tests/oci_cri.rs, speaking to a container runtime's CRI socket the way
the kubelet does: gRPC (runtime.v1 RuntimeService and ImageService, through the generated stubs
of PyPI's container-runtime-interface-api) and the streaming server that Exec, Attach and
PortForward answer with (WebSocket, protocol v4.channel.k8s.io, as kubectl speaks to it).

It runs as one long-lived process: one JSON request a line on stdin, one JSON answer a line on
stdout, so that the test pays Python's and gRPC's start-up once.

Requests:
  {"op": "rpc", "method": "RunPodSandbox", "request": {...}, "timeout": 60}
      -> {"ok": true, "response": {...}, "secs": 0.1}
      or {"ok": false, "code": "DEADLINE_EXCEEDED", "error": "...", "secs": 60.0}
     Messages are protobuf JSON with the proto field names (snake_case); int64 fields come back
     as strings; fields at their default value are given too (a state of 0 is
     SANDBOX_READY or CONTAINER_CREATED). ExecSync's stdout and
     stderr come back as text.
  {"op": "stream", "url": "http://127.0.0.1:PORT/exec/TOKEN", "stdin": ["text", ...],
   "resize": [cols, rows] or null, "until": "text" or null, "timeout": 20}
      -> {"ok": true, "stdout": "...", "stderr": "...", "status": {...} or null,
          "closed": true|false}
     Each stdin item is sent in its own message, 0.2 s apart. "until": stop (and close the
     connection) once stdout contains that text, for an attach, which never ends by itself.
     "status" is what the error channel (3) carried: a metav1.Status as JSON. "closed": the server
     closed the stream (the process ended) rather than the client after "until" or the timeout.
"""

import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.parse

import grpc
from google.protobuf import json_format

from cri_api.v1 import api_pb2

SERVICES = {}
for svc in ("RuntimeService", "ImageService"):
    desc = api_pb2.DESCRIPTOR.services_by_name[svc]
    for m in desc.methods:
        SERVICES[m.name] = (desc.full_name, m)


def message_class(descriptor):
    return getattr(api_pb2, descriptor.name)


def rpc(channel, req):
    service, method = SERVICES[req["method"]]
    in_cls = message_class(method.input_type)
    out_cls = message_class(method.output_type)
    call = channel.unary_unary(
        f"/{service}/{method.name}",
        request_serializer=in_cls.SerializeToString,
        response_deserializer=out_cls.FromString,
    )
    msg = json_format.ParseDict(req.get("request", {}), in_cls())
    t0 = time.monotonic()
    try:
        resp = call(msg, timeout=req.get("timeout", 60))
    except grpc.RpcError as e:
        return {
            "ok": False,
            "code": e.code().name,
            "error": e.details(),
            "secs": time.monotonic() - t0,
        }
    out = json_format.MessageToDict(
        resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    if method.name == "ExecSync":
        # bytes fields come as base64 in protobuf JSON: give the test text.
        out["stdout"] = resp.stdout.decode(errors="replace")
        out["stderr"] = resp.stderr.decode(errors="replace")
    return {"ok": True, "response": out, "secs": time.monotonic() - t0}


class WebSocket:
    """A minimal RFC 6455 client: enough for the streaming server's binary channel frames."""

    def __init__(self, url, protocol, timeout):
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + ("?" + u.query if u.query else "")
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise RuntimeError(f"handshake: connection closed after {head!r}")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise RuntimeError(f"handshake refused: {head.decode(errors='replace')}")
        self.buf = b""

    def send(self, payload, opcode=2):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(hdr + mask + masked)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """One message: (opcode, payload); continuation frames joined; pings answered."""
        data, first_op = b"", None
        while True:
            b0, b1 = self._read(2)
            op, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if op == 9:
                self.send(payload, opcode=10)
                continue
            if op == 10:
                continue
            if op == 8:
                return 8, payload
            if first_op is None:
                first_op = op
            data += payload
            if b0 & 0x80:
                return first_op, data

    def close(self):
        try:
            self.send(struct.pack("!H", 1000), opcode=8)
        except OSError:
            pass
        self.sock.close()


def stream(req):
    timeout = req.get("timeout", 20)
    deadline = time.monotonic() + timeout
    ws = WebSocket(req["url"], "v4.channel.k8s.io", timeout)
    out = {1: b"", 2: b"", 3: b""}
    closed = False
    until = req.get("until")
    if req.get("resize"):
        cols, rows = req["resize"]
        ws.send(b"\x04" + json.dumps({"Width": cols, "Height": rows}).encode())
    pending = [s.encode() for s in req.get("stdin") or []]
    next_send = time.monotonic() + 0.2
    try:
        while time.monotonic() < deadline:
            if pending and time.monotonic() >= next_send:
                ws.send(b"\x00" + pending.pop(0))
                next_send = time.monotonic() + 0.2
            ws.sock.settimeout(0.1 if pending else max(0.05, deadline - time.monotonic()))
            try:
                op, data = ws.recv()
            except socket.timeout:
                continue
            except EOFError:
                closed = True
                break
            if op == 8:
                closed = True
                break
            if data and data[0] in out:
                out[data[0]] += data[1:]
            if until and until.encode() in out[1]:
                break
    finally:
        ws.close()
    status = None
    if out[3]:
        try:
            status = json.loads(out[3])
        except ValueError:
            status = {"raw": out[3].decode(errors="replace")}
    return {
        "ok": True,
        "stdout": out[1].decode(errors="replace"),
        "stderr": out[2].decode(errors="replace"),
        "status": status,
        "closed": closed,
    }


def main():
    channel = grpc.insecure_channel("unix://" + sys.argv[1])
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            if req["op"] == "rpc":
                ans = rpc(channel, req)
            elif req["op"] == "stream":
                ans = stream(req)
            else:
                ans = {"ok": False, "code": "CLIENT", "error": f"unknown op {req['op']}"}
        except Exception as e:  # reported to the test, which records the step as failed
            ans = {"ok": False, "code": "CLIENT", "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(ans) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
