# The program a SaaS interpreter runs for each request of a session (a cell, a file operation, the close):
# fixed text; below, only base64 data, a path made by the opener, a hex marker and a number are filled in.
# It hands the request to the session host over its socket and prints the host's answer under the marker.
def _sandboxctl_call(socket_path_b64, request_b64, marker, timeout):
    import base64, json, socket, struct

    def receive(connection, size):
        chunks = []
        while size:
            chunk = connection.recv(min(size, 1 << 20))
            if not chunk:
                raise EOFError("the session host closed the connection")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    try:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(timeout)
        connection.connect(base64.b64decode(socket_path_b64).decode())
        request = base64.b64decode(request_b64)
        connection.sendall(struct.pack(">I", len(request)) + request)
        answer = receive(connection, struct.unpack(">I", receive(connection, 4))[0])
        connection.close()
    except (OSError, EOFError, struct.error) as exc:
        answer = json.dumps({"ok": False, "code": "session_host_gone", "session_over": "the session host is gone",
                             "message": "the session host did not answer (" + type(exc).__name__ + ")"}).encode()
    print("\n" + marker + base64.b64encode(answer).decode() + marker, flush=True)


_sandboxctl_call("{socket}", "{request}", "{marker}", {timeout})
