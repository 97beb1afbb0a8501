#!/usr/bin/env python3
"""A complete smime-agent client in Python, standard library only: what a mail client's
author needs, in one sitting. It connects to the agent's socket, checks that the agent runs
as this user (SO_PEERCRED), says hello, and signs or verifies a MIME entity, answering the
agent's PIN prompts itself (pin_prompt: true) with a PIN it reads from a file descriptor.

    smime_agent_client.py [--socket PATH] [--pin-fd N] sign ADDRESS < entity > signed
    smime_agent_client.py [--socket PATH] verify < signed

See proto/PROTOCOL.md: newline-delimited JSON, one request, one response each, events
unsolicited; binary content is base64.
"""

import argparse
import base64
import json
import os
import socket
import struct
import sys


def default_socket():
    path = os.environ.get("SMIME_AGENT_SOCK")
    if path:
        return path
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "smime-agent", "agent.sock")
    return "/tmp/smime-agent-%d/agent.sock" % os.getuid()


class Agent:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        # Send nothing, PIN or message, to a socket another user serves.
        creds = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.getuid():
            raise SystemExit("the socket %s is served by uid %d, not by this user" % (path, uid))
        self.reader = self.sock.makefile("rb")
        self.next_id = 0

    def send(self, op, **params):
        self.next_id += 1
        frame = dict(params, id=self.next_id, op=op)
        self.sock.sendall(json.dumps(frame).encode() + b"\n")
        return self.next_id

    def call(self, op, on_event=None, **params):
        """Sends `op` and returns its result; events on the way go to `on_event`."""
        want = self.send(op, **params)
        while True:
            line = self.reader.readline()
            if not line:
                raise SystemExit("the agent closed the connection")
            msg = json.loads(line)
            if "event" in msg:
                if on_event:
                    on_event(msg)
                continue
            if msg.get("id") != want:
                continue  # the answer to one of our `pin` answers
            if "error" in msg:
                err = msg["error"]
                raise SystemExit("smime-agent: %s: %s" % (err["code"], err["message"]))
            return msg["ok"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", default=default_socket())
    ap.add_argument("--pin-fd", type=int, help="read the PIN from this file descriptor")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sign")
    s.add_argument("address")
    sub.add_parser("verify")
    args = ap.parse_args()

    agent = Agent(args.socket)
    agent.call("hello", version=1, client="smime_agent_client.py", pin_prompt=True)
    content = base64.b64encode(sys.stdin.buffer.read()).decode()

    def answer_pin(event):
        if event.get("event") != "pin_needed":
            return
        if args.pin_fd is None or event.get("on_reader"):
            return  # nothing to type here: the agent's own prompt or the reader asks
        with os.fdopen(os.dup(args.pin_fd)) as f:
            pin = f.readline().rstrip("\n")
        agent.send("pin", prompt=event["prompt"], pin=pin)

    if args.command == "sign":
        r = agent.call("sign", on_event=answer_pin, signer=args.address, content=content)
        sys.stdout.buffer.write(base64.b64decode(r["mime"]))
        print("signed with %s" % r["certificate"]["subject"], file=sys.stderr)
    else:
        r = agent.call("verify", content=content, validation="wait")
        for layer in r["layers"]:
            for signer in layer["signers"]:
                who = signer.get("signer") or {}
                print("%s: signature %s, certificate %s" % (
                    who.get("subject", "unknown signer"),
                    signer["signature"]["status"],
                    signer["certificate"]["status"]), file=sys.stderr)
        print(r["status"])
        return 0 if r["status"] == "valid" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
