#!/usr/bin/python3
"""Fake servers and small helpers for the end-to-end suite (tests/e2e/run.sh).

Standard library only; run with Debian's /usr/bin/python3.

  fakes.py inventory --data FILE --port-file PF [--port N] [--log LOG]
      Serves GET /inventory with the bytes of FILE, read afresh on every
      request, so the suite changes the inventory by rewriting FILE
      (atomically: write a temp file and rename it).  While FILE.hang
      exists, requests hang for 60 s instead (and FILE.hung is created).  Listens on 127.0.0.1:N
      (default: a free port) and writes the port to PF once listening.

  fakes.py sensors --count N --port-file PF [--log LOG]
      Serves Prometheus text metrics on /metrics from N ports on 127.0.0.1;
      writes the ports to PF, one a line, once all are listening.

  fakes.py free-port
      Prints a TCP port that is free on 127.0.0.1 right now.

  fakes.py watch --file FILE --out OUT [--interval S]
      Reads FILE every S seconds (default 0.005) until SIGTERM and counts
      the reads that found no file and the distinct contents seen; writes
      "reads=N missing=M errors=E contents=C" to OUT at the end (and every
      second, atomically), so that a suite can prove that FILE never went
      away and never changed while something else happened.
"""
import hashlib
import signal
import argparse
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def write_port_file(path, ports):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join("%d\n" % p for p in ports))
    os.rename(tmp, path)


def make_logger(path):
    out = open(path, "a", buffering=1) if path else sys.stderr

    def log(msg):
        out.write("%s %s\n" % (time.strftime("%H:%M:%S"), msg))

    return log


def inventory(args):
    log = make_logger(args.log)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            log("inventory %s %s" % (self.address_string(), fmt % a))

        def do_GET(self):
            if self.path.split("?")[0] != "/inventory":
                self.send_error(404)
                return
            if os.path.exists(args.data + ".hang"):
                # Tell the suite a request is now hanging, then hang.
                open(args.data + ".hung", "w").close()
                time.sleep(60)
                return
            try:
                with open(args.data, "rb") as f:
                    body = f.read()
            except OSError as e:
                self.send_error(500, str(e))
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = Server(("127.0.0.1", args.port), Handler)
    write_port_file(args.port_file, [srv.server_address[1]])
    log("inventory listening on 127.0.0.1:%d" % srv.server_address[1])
    srv.serve_forever()


def sensors(args):
    log = make_logger(args.log)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            log("sensor :%d %s" % (self.server.server_address[1], fmt % a))

        def do_GET(self):
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            port = self.server.server_address[1]
            body = (
                "# HELP e2e_sensor_up A fake sensor of the sd-updater e2e suite.\n"
                "# TYPE e2e_sensor_up gauge\n"
                'e2e_sensor_up{port="%d"} 1\n' % port
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    servers = [Server(("127.0.0.1", 0), Handler) for _ in range(args.count)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    ports = [s.server_address[1] for s in servers]
    write_port_file(args.port_file, ports)
    log("sensors listening on %s" % ports)
    threading.Event().wait()


def free_port(_args):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()



def watch(args):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    reads = missing = errors = 0
    seen = set()
    first_missing = None

    def report():
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(
                "reads=%d missing=%d errors=%d contents=%d first_missing=%s\n"
                % (reads, missing, errors, len(seen), first_missing or "-")
            )
        os.rename(tmp, args.out)

    last = time.monotonic()
    while not stop.is_set():
        try:
            with open(args.file, "rb") as f:
                seen.add(hashlib.sha256(f.read()).hexdigest())
        except FileNotFoundError:
            missing += 1
            if first_missing is None:
                first_missing = time.strftime("%H:%M:%S")
        except OSError:
            errors += 1
        reads += 1
        if time.monotonic() - last >= 1:
            report()
            last = time.monotonic()
        time.sleep(args.interval)
    report()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("inventory")
    i.add_argument("--data", required=True)
    i.add_argument("--port-file", required=True)
    i.add_argument("--port", type=int, default=0)
    i.add_argument("--log")
    i.set_defaults(fn=inventory)
    s = sub.add_parser("sensors")
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--port-file", required=True)
    s.add_argument("--log")
    s.set_defaults(fn=sensors)
    f = sub.add_parser("free-port")
    f.set_defaults(fn=free_port)
    w = sub.add_parser("watch")
    w.add_argument("--file", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--interval", type=float, default=0.005)
    w.set_defaults(fn=watch)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
