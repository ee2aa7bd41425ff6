"""A static file server on loopback for the download benchmark: every GET answers the one file, by sendfile.

It must never be the bottleneck (the point is the hook against curl, not against a slow server), so the body
goes from the page cache to the socket in the kernel (``socket.sendfile``) and the process does nothing else.

    python benchmarks/static_server.py FILE    # prints the port, then serves until killed
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    path = sys.argv[1]
    size = os.path.getsize(path)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The headers and the body go out in two sends: with Nagle's algorithm on, the body's first segment
        # waits for the client's delayed ACK of the headers (40 ms on Linux), for curl and the hook alike.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with open(path, "rb") as body:
                self.connection.sendfile(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
