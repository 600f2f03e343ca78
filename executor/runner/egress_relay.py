"""The in-sandbox egress relay: a TCP listener on the sandbox's own loopback that carries each connection, byte
for byte, to the egress proxy's Unix socket in the sandbox's channel folder, and nowhere else.

The sandbox has no network (`--network=none`): the socket, bound by the worker for this cell only, is its one
way out, and the proxy behind it decides every connection. The supervisor starts the relay only for a cell
(a one-shot run's one cell, or a session's) with an allowlist, binding the port before the cell's code runs,
and ends it with the cell's other processes. The relay is root of the sandbox with only CAP_KILL, so the
user's processes (nobody) can neither signal it nor read its memory — nor connect to the socket themselves
(it is root's, 0600). The relay reads nothing of what it carries and holds nothing secret. Standard library
only.
"""

import os
import selectors
import socket

CHUNK = 64 * 1024
MAX_CONNECTIONS = 128  # at once; the proxy caps the run's connections in all


def start(port: int, socket_path: str) -> tuple[int | None, str]:
    """Fork the relay, listening on 127.0.0.1:`port` before this returns: (its pid, "") or (None, why not)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # An earlier cell's relay may have left connections in TIME_WAIT on the port; a live listener still
    # keeps it (another uid cannot share it even so).
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
    except OSError as exc:
        listener.close()
        return None, f"the egress relay could not listen on 127.0.0.1:{port}: {exc.strerror}"
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, listener.fileno())
            os.closerange(listener.fileno() + 1, 1024)
            serve(listener, socket_path)
        finally:
            os._exit(0)
    listener.close()
    return pid, ""


class Direction:
    """Bytes on their way from one socket to the other, and whether the source has finished sending."""

    def __init__(self, source: socket.socket, target: socket.socket) -> None:
        self.source, self.target = source, target
        self.pending = b""
        self.source_done = False
        self.shut = False  # the target's writing side is shut down (all was written after the source's end)


class Pair:
    """One relayed connection: the client's socket and the proxy's, and the two directions between them."""

    def __init__(self, client: socket.socket, proxy: socket.socket) -> None:
        self.sockets = (client, proxy)
        self.directions = (Direction(client, proxy), Direction(proxy, client))
        self.watched: dict[socket.socket, int] = {}
        self.closed = False

    def events(self, sock: socket.socket) -> int:
        """Read from a socket while what it sent before was written on and it has not finished; write to a
        socket while something waits for it."""
        wanted = 0
        for direction in self.directions:
            if direction.source is sock and not direction.pending and not direction.source_done:
                wanted |= selectors.EVENT_READ
            if direction.target is sock and direction.pending:
                wanted |= selectors.EVENT_WRITE
        return wanted

    def finished(self) -> bool:
        return all(direction.shut for direction in self.directions)


def serve(listener: socket.socket, socket_path: str) -> None:
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    pairs: set[Pair] = set()
    while True:
        for key, events in selector.select():
            if key.fileobj is listener:
                pair = accept(listener, socket_path) if len(pairs) < MAX_CONNECTIONS else None
                if pair is not None:
                    pairs.add(pair)
                    watch(pair, selector)
                continue
            pair, sock = key.data, key.fileobj
            try:
                step(pair, sock, events)
            except OSError:
                pair.closed = True
            if pair.closed or pair.finished():
                close(pair, selector)
                pairs.discard(pair)
            else:
                watch(pair, selector)


def accept(listener: socket.socket, socket_path: str) -> Pair | None:
    try:
        client, _ = listener.accept()
    except OSError:
        return None
    proxy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proxy.connect(socket_path)  # a local socket: connecting does not block
    except OSError:
        client.close()
        proxy.close()
        return None
    client.setblocking(False)
    proxy.setblocking(False)
    return Pair(client, proxy)


def step(pair: Pair, sock: socket.socket, events: int) -> None:
    """Move what can move now for `sock`: write what waits for it, read what it sent."""
    for direction in pair.directions:
        if direction.target is sock and events & selectors.EVENT_WRITE and direction.pending:
            try:
                sent = sock.send(direction.pending)
                direction.pending = direction.pending[sent:]
            except BlockingIOError:
                pass
        if direction.source is sock and events & selectors.EVENT_READ and not direction.source_done:
            try:
                data = sock.recv(CHUNK)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                direction.pending += data
            else:
                direction.source_done = True
    for direction in pair.directions:
        if direction.source_done and not direction.pending and not direction.shut:
            direction.shut = True
            try:
                direction.target.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def watch(pair: Pair, selector: selectors.BaseSelector) -> None:
    for sock in pair.sockets:
        wanted, current = pair.events(sock), pair.watched.get(sock, 0)
        if wanted == current:
            continue
        if not current:
            selector.register(sock, wanted, pair)
        elif not wanted:
            selector.unregister(sock)
        else:
            selector.modify(sock, wanted, pair)
        pair.watched[sock] = wanted


def close(pair: Pair, selector: selectors.BaseSelector) -> None:
    for sock in pair.sockets:
        if pair.watched.get(sock):
            selector.unregister(sock)
        sock.close()
    pair.watched.clear()


def start_for(egress: dict | None) -> str:
    """Start the relay a run with an allowlist needs (none without one); "" or a line saying why it has no way
    out (in a session, a cell's code may hold the port since an earlier cell)."""
    if not egress:
        return ""
    pid, problem = start(int(egress["port"]), str(egress["socket"]))
    return "" if pid else f"sandboxctl: {problem}\n"
