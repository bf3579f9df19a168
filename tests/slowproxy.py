"""A TCP proxy on loopback that delays every chunk the client sends (a slow object store), or
refuses connections while ``down`` (an outage).  Bounded: it serves until ``close()``."""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, List, Tuple


class SlowProxy:
    def __init__(self, target: Tuple[str, int], delay: float = 0.5) -> None:
        self.target, self.delay, self.down = target, delay, False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.chunks = 0
        self._open: List[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            if self.down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data or (self.down and slow):
                    break
                if slow:
                    self.chunks += 1
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def set_down(self, down: bool) -> None:
        self.down = down
        if down:
            for s in self._open:
                try:
                    s.close()
                except OSError:
                    pass
            self._open = []

    def close(self) -> None:
        self._stop.set()
        self.set_down(True)
        self.listener.close()

    def __enter__(self) -> "SlowProxy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
