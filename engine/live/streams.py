"""Network stream addresses: shown without secrets, and checked before OpenCV gets them.

:func:`redact_url` is the only form in which a stream address is shown, logged, reported or kept:
no password, no secret-looking query value.

:func:`preflight` asks the server for a first answer from Python, in short slices that a stop can
interrupt, before the address goes to OpenCV. Why: OpenCV's FFmpeg backend holds one lock while it
opens any capture, so a server that never answers would keep every later video or stream from
opening for the whole open timeout. Waiting here, outside that lock, keeps a dead server from
blocking anything but itself. FFmpeg has no cancellable open, and no kept library probes a stream
this way, so it is written here: a TCP connect, TLS for the ``s`` schemes, and the protocol's
smallest request (HTTP GET, RTSP OPTIONS, RTMP's handshake; nothing for raw TCP and FTP, whose
servers speak first) until the first bytes of a reply arrive. Other schemes are refused.
"""

from __future__ import annotations

import os
import re
import select
import socket
import ssl
import threading
import time
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

SECRET_KEYS = re.compile(r"pass|pwd|token|secret|key|auth|sig|credential|session", re.IGNORECASE)
# The schemes a stream may have, with their default ports (raw TCP has none: the address names one).
# Any other scheme (udp, srt, rtp, mms, ...) is refused in one line: FFmpeg would wait for it inside
# the lock that every other capture needs, and a connectionless one cannot be asked whether it is there.
_DEFAULT_PORTS: dict[str, int | None] = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935,
                                         "rtmps": 443, "tcp": None, "ftp": 21}
_RTMP_HELLO = b"\x03" + bytes(1536)  # C0 (version 3) and C1 (time 0, zero, zero "random" bytes)


class StreamError(Exception):
    """A stream that cannot be reached; the message is one line, without secrets."""


def redact_url(url: str, placeholder: str = "***") -> str:
    """``url`` without its password and with secret-looking query values replaced.

    ``rtsp://admin:p@ss@host/x?token=abc&fps=5`` -> ``rtsp://admin:***@host/x?token=***&fps=5``; with
    ``placeholder=""`` (what is saved in settings) -> ``rtsp://admin@host/x?token=&fps=5``. Text that
    is not a URL comes back unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/]*@", "//", url)  # unparseable: drop anything that looks like user info
    if not parts.scheme or not parts.netloc:
        return url
    userinfo, at, host = parts.netloc.rpartition("@")  # the last @: passwords may contain @
    netloc = parts.netloc
    if at:
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}{':' + placeholder if colon and placeholder else ''}@{host}" if user else host
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{quote(k, safe='')}={placeholder if SECRET_KEYS.search(k) else quote(v, safe='')}"
                         for k, v in pairs)
    fragment = placeholder if parts.fragment and SECRET_KEYS.search(parts.fragment) else parts.fragment
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def preflight(url: str, stop: threading.Event, timeout: float = 8.0) -> bool:
    """Wait for the server of ``url`` to answer: to its protocol's smallest request (HTTP GET, RTSP
    OPTIONS, the RTMP handshake), or with its first bytes unasked (a raw TCP stream, an FTP greeting).

    Returns True once it answers, False when ``stop`` was set first; raises :class:`StreamError`
    when it refuses, cannot be resolved, says nothing within ``timeout`` seconds, or the scheme is
    not one of a stream's.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    shown = redact_url(url)
    if scheme not in _DEFAULT_PORTS:
        raise StreamError(f"{shown}: {scheme}:// is not a stream this app opens (it opens "
                          f"{', '.join(f'{s}://' for s in _DEFAULT_PORTS)})")
    if not parts.hostname:
        raise StreamError(f"{shown}: no host in the address")
    waiter = _Waiter(stop, time.monotonic() + timeout, shown)
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
        if port is None:
            raise StreamError(f"{shown}: {scheme}:// needs a port (host:port)")
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except ValueError:
        raise StreamError(f"{shown}: not a valid port") from None
    except OSError as e:
        raise StreamError(f"{shown}: cannot find the host ({e.strerror or e})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        sock.connect_ex(address)
        if not waiter.wait(sock, write=True, what="a connection"):
            return False
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise StreamError(f"{shown}: cannot connect ({os.strerror(error)})")
        if scheme in ("https", "rtsps"):
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # FFmpeg judges it later
            sock = context.wrap_socket(sock, server_hostname=parts.hostname, do_handshake_on_connect=False)
            while True:
                try:
                    sock.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if not waiter.wait(sock, write=False, what="a secure connection"):
                        return False
                except ssl.SSLWantWriteError:
                    if not waiter.wait(sock, write=True, what="a secure connection"):
                        return False
        if scheme.startswith("rtsp"):
            request = f"OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: cnn-arena\r\n\r\n".encode("latin-1", "replace")
        elif scheme.startswith("rtmp"):
            request = _RTMP_HELLO
        elif scheme.startswith("http"):
            path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
            request = f"GET {path} HTTP/1.0\r\nHost: {parts.hostname}\r\nUser-Agent: cnn-arena\r\n\r\n".encode(
                "latin-1", "replace")
        else:
            request = b""  # tcp, ftp: the server speaks first
        if request:
            sock.setblocking(True)
            sock.settimeout(max(0.1, waiter.deadline - time.monotonic()))
            sock.sendall(request)  # a few bytes: the send buffer takes them
            sock.setblocking(False)
        if not waiter.wait(sock, write=False, what="an answer"):
            return False
        try:
            first = sock.recv(1)
        except ssl.SSLWantReadError:  # TLS bytes without application data yet: an answer all the same
            return True
        if not first:
            raise StreamError(f"{shown}: the server closed the connection without answering")
        return True
    except (OSError, ssl.SSLError) as e:
        raise StreamError(f"{shown}: {getattr(e, 'strerror', None) or e}") from None
    finally:
        sock.close()


class _Waiter:
    """Waits for a socket in short slices: a stop or the deadline ends the wait."""

    def __init__(self, stop: threading.Event, deadline: float, shown: str, slice_s: float = 0.05) -> None:
        self.stop, self.deadline, self.shown, self.slice_s = stop, deadline, shown, slice_s

    def wait(self, sock: socket.socket, *, write: bool, what: str) -> bool:
        """True when ``sock`` is ready, False when stopped; StreamError after the deadline."""
        while not self.stop.is_set():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise StreamError(f"{self.shown}: no answer (waited for {what})")
            ready = select.select([], [sock], [sock], min(self.slice_s, remaining)) if write else \
                select.select([sock], [], [sock], min(self.slice_s, remaining))
            if any(ready):
                return True
        return False
