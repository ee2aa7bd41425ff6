"""A real SMTP server on loopback that keeps every message it receives, for the paging tests.

aiosmtpd (the test extra) when it is installed; else the standard library's ``smtpd`` (Python 3.11, removed in
3.12), so the same tests run in a venv made before aiosmtpd joined the extra. Both speak SMTP over a socket:
the notifier under test sends exactly as it would to a relay.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import warnings
from email.message import EmailMessage
from typing import Any, cast


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackSMTP:
    """``with LoopbackSMTP() as smtp:`` … ``smtp.messages`` (parsed) and ``smtp.raw`` (the bytes as sent)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.raw: list[bytes] = []
        self._stop: Any = None

    @property
    def messages(self) -> list[EmailMessage]:
        return [cast(EmailMessage, email.message_from_bytes(r, policy=email.policy.default)) for r in self.raw]

    def connection_uri(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?disable_ssl=true&disable_tls=true&retry_limit=0&timeout=5"

    def __enter__(self) -> LoopbackSMTP:
        try:
            self._start_aiosmtpd()
        except ImportError:
            self._start_stdlib()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _start_aiosmtpd(self) -> None:
        from aiosmtpd.controller import Controller

        received = self.raw

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                received.append(envelope.original_content or envelope.content)
                return "250 OK"

        controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        controller.start()
        self._stop = controller.stop

    def _start_stdlib(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import asyncore
            import smtpd

        received = self.raw

        class Server(smtpd.SMTPServer):
            def process_message(self, peer: Any, mailfrom: str, rcpttos: list[str], data: Any, **kw: Any) -> None:
                received.append(data if isinstance(data, bytes) else data.encode())

        server = Server(("127.0.0.1", self.port), None, decode_data=False)
        thread = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.05}, daemon=True)
        thread.start()

        def stop() -> None:
            server.close()
            thread.join(5)

        self._stop = stop
