"""Connection limits of ``mnist-cnn serve`` that uvicorn leaves open: the size and the time of a request's head.

uvicorn's httptools protocol (its fast parser, used when httptools is installed) buffers a request's headers
without any limit, and waits for them without any deadline: one client can make a worker hold a header of
hundreds of megabytes, and a few hundred clients that trickle a byte now and then (slowloris) hold as many
connections open for ever. ``LimitedHttpTools`` is that protocol with two limits:

- the head (request line and headers) is at most ``MAX_HEAD_BYTES``: beyond that, 431 and the connection closed;
- the head must arrive within ``HEAD_TIMEOUT_S`` of the connection opening (or of the previous response): else
  the connection is closed.

uvicorn's h11 protocol (when httptools is missing) has its own head limit, ``h11_max_incomplete_event_size``,
set to the same size. The body's deadlines are the app's (serve.read_body), which knows what it is reading.
"""

from __future__ import annotations

import logging

MAX_HEAD_BYTES = 64 * 1024  # a browser's head is under 8 KiB even with cookies
HEAD_TIMEOUT_S = 15.0
LINGER_S = 2.0  # after a 431, the client's remaining bytes are read and dropped this long before closing
KEEP_ALIVE_S = 5  # uvicorn's default: an idle kept-alive connection closes after this
log = logging.getLogger("mnist_cnn.serve")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools: uvicorn uses h11, limited by its own setting
    HttpToolsProtocol = None


def uvicorn_settings() -> dict:
    """Keyword arguments for ``uvicorn.Config``/``uvicorn.run`` that apply these limits."""
    settings = {"timeout_keep_alive": KEEP_ALIVE_S, "h11_max_incomplete_event_size": MAX_HEAD_BYTES}
    if HttpToolsProtocol is not None:
        settings["http"] = LimitedHttpTools
    return settings


if HttpToolsProtocol is not None:

    class LimitedHttpTools(HttpToolsProtocol):
        """uvicorn's httptools protocol with a head-size limit and a head deadline (see the module's text)."""

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._head_bytes, self._tail, self._in_head, self._refused = 0, b"", True, False
            self._deadline = self.loop.call_later(HEAD_TIMEOUT_S, self._head_too_slow)

        def data_received(self, data: bytes) -> None:
            if self._refused:  # what the client still sends after the 431 is read and dropped
                return
            if self._in_head:
                if self._deadline is None:  # the next request on a kept-alive connection
                    self._deadline = self.loop.call_later(HEAD_TIMEOUT_S, self._head_too_slow)
                end = (self._tail + data).find(b"\r\n\r\n")  # where the head ends, if in this chunk
                used = self._head_bytes + (len(data) if end < 0 else end + 4 - len(self._tail))
                if used > MAX_HEAD_BYTES:
                    self._refuse_head()
                    return
                self._head_bytes, self._tail = self._head_bytes + len(data), (self._tail + data)[-3:]
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._cancel_deadline()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            self._head_bytes, self._tail, self._in_head = 0, b"", True
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

        def _cancel_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _refuse_head(self) -> None:
            log.info("%s: request head over %d bytes: refused (431)", _peer(self.client), MAX_HEAD_BYTES)
            body = b'{"detail":"request head over %d bytes"}' % MAX_HEAD_BYTES  # JSON, as every error of the API
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            self._in_head, self._refused = False, True
            self._cancel_deadline()
            # Closing now, with the client's bytes unread, would make the kernel send a reset that can
            # overtake the 431: close our side for writing, drop what still comes, close a moment later.
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)

        def _head_too_slow(self) -> None:
            self._deadline = None
            if self._in_head and not self.transport.is_closing():
                log.info("%s: no complete request head within %.0f s: connection closed", _peer(self.client),
                         HEAD_TIMEOUT_S)
                self.transport.close()


def _peer(client) -> str:
    return "%s:%d" % tuple(client[:2]) if client else "a client"
