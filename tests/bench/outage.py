#!/usr/bin/env python3
"""Recovery after a long outage: the release daemon against the loopback HTTPS stand-in.

The stand-in issues tokens of --expires-in seconds (default 120, so the token expires early in
the outage), then answers 503 for --outage-seconds (default 300) from just after the first
token. Measures the token requests the daemon sends during the outage (in all, and per minute
once its token has expired) and the time from the endpoint healing to a new token in the file.
Prints a Markdown table.

Usage: tests/bench/outage.py [--outage-seconds 300] [--expires-in 120] [--daemon PATH] [ARGS...]
ARGS after -- go to the daemon (e.g. -- --backoff-max-expired 30s).
Build first: cargo build --release --workspace
"""

import argparse
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

from bench import DAEMON, STAND_IN, free_port, read, wait_for


def control(port, ca, path, body=None):
    context = ssl.create_default_context(cafile=ca)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"https://localhost:{port}{path}", data=data,
                                     method="POST" if data else "GET")
    with urllib.request.urlopen(request, context=context, timeout=5) as response:
        return json.loads(response.read())


def requests_sent(port, ca):
    return control(port, ca, "/control/stats")["token_requests"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-seconds", type=int, default=300)
    parser.add_argument("--expires-in", type=int, default=120)
    parser.add_argument("--daemon", default=DAEMON)
    parser.add_argument("daemon_args", nargs="*")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="fiskil-outage-")
    port, ca = free_port(), os.path.join(work, "ca.pem")
    for name, value in (("client_id", "outage-client"), ("client_secret", "outage-secret")):
        with open(os.path.join(work, name), "w") as f:
            f.write(value)
    stand_in = subprocess.Popen([STAND_IN, "--listen", f"127.0.0.1:{port}", "--ca-out", ca,
                                 "--expires-in", str(args.expires_in), "--client-id", "outage-client",
                                 "--client-secret", "outage-secret", "--control"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    token_file = os.path.join(work, "token")
    daemon = None
    try:
        wait_for(lambda: os.path.exists(ca), 10, "the stand-in")
        time.sleep(0.2)
        daemon = subprocess.Popen([args.daemon, "--token-url", f"https://localhost:{port}/v1/token",
                                   "--ca-file", ca, "--client-id-file", os.path.join(work, "client_id"),
                                   "--client-secret-file", os.path.join(work, "client_secret"),
                                   "--token-file", token_file, "--listen", "127.0.0.1:0", *args.daemon_args],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: read(token_file), 10, "the first token")
        first = read(token_file)
        expires_at = time.monotonic() + args.expires_in
        control(port, ca, "/control/behaviour", {"behaviour": "fail", "status": 503})
        before = requests_sent(port, ca)
        time.sleep(max(0, expires_at - time.monotonic()))
        at_expiry = requests_sent(port, ca)
        expired_seconds = args.outage_seconds - args.expires_in
        time.sleep(expired_seconds)
        during = requests_sent(port, ca)
        control(port, ca, "/control/behaviour", {"behaviour": "issue", "expires_in": args.expires_in})
        healed = time.monotonic()
        wait_for(lambda: read(token_file) not in (None, first), args.outage_seconds, "a new token")
        recovery = time.monotonic() - healed
        print("| measure | value |")
        print("|---|---|")
        print(f"| outage | {args.outage_seconds} s of 503, tokens of {args.expires_in} s |")
        print(f"| token requests during the outage | {during - before} |")
        print(f"| of which after the token expired ({expired_seconds} s) | {during - at_expiry} "
              f"({(during - at_expiry) * 60 / expired_seconds:.1f} a minute) |")
        print(f"| endpoint healed to a new token in the file | {recovery:.2f} s |")
    finally:
        if daemon:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)
        stand_in.send_signal(signal.SIGINT)
        stand_in.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
