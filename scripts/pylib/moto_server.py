"""A local S3 for tests: moto's server, single-threaded, on loopback.

    <moto venv>/bin/python scripts/pylib/moto_server.py [--port N] [--host 127.0.0.1] [--tls] [--verbose]

Prints exactly one line on stdout once the socket accepts connections,

    MOTO_READY port=NNNNN

(port 0, the default, lets the kernel pick a free port), then serves until its standard input
closes (the test that started it exited, however it exited) or it gets SIGTERM / SIGINT.

Why single-threaded: moto checks a conditional PUT's precondition and then writes, without a
lock; its usual threaded server lets two If-Match (or If-None-Match) writers both win, which no
real S3 does. Served one request at a time, the check and the write cannot interleave. (The
single-threaded server speaks HTTP/1.0, one request per connection, so a client's idle
keep-alive connection cannot block the others.)

moto checks no credentials unless INITIAL_NO_AUTH_ACTION_COUNT is set in the environment (0:
every request must carry a key moto's IAM knows): tests use that for "bad credentials".

Needs moto (scripts/setup installs it into ${XDG_CACHE_HOME:-~/.cache}/t4-rs/moto-venv).
"""

import argparse
import logging
import os
import signal
import sys
import threading


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a throw-away self-signed certificate (tests of the TLS client)",
    )
    args = parser.parse_args()

    # Exit at once, from any thread: the state is in memory and dies with us.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    # What werkzeug's run_simple(host, port, app, threaded=False, request_handler=...) does, minus
    # its banner and reloader: make_server binds and listens, so the port is known (port 0) and
    # connections are accepted (queued) before the ready line is printed.
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        args.host,
        args.port,
        app,
        threaded=False,
        processes=1,
        request_handler=MotoRequestHandler,
        ssl_context="adhoc" if args.tls else None,
    )
    assert not server.multithread, "moto must serve one request at a time"

    def exit_when_stdin_closes() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            os._exit(0)

    threading.Thread(target=exit_when_stdin_closes, name="stdin-watch", daemon=True).start()
    print(f"MOTO_READY port={server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
