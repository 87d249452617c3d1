"""A TLS origin for the upstream-TLS tests: HTTP/1.1 keep-alive over TLS on
127.0.0.1:PORT with the given certificate and key; answers every GET with
`secure upstream <path>` and the connection's TLS SNI in X-Seen-SNI, and every POST
with 413 at once, closing with the body unread."""
import http.server
import socket
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"secure upstream " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Seen-SNI", getattr(self.request, "sni", "") or "")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        # Refuses an upload at its head, as a size limit does: answers, says goodbye
        # (close_notify) and closes with the body unread, so the kernel resets. Without
        # Nagle: a reset drops whatever the kernel still holds back, and Nagle holds a
        # small record back behind the session tickets until they are acknowledged.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = b"too large"
        self.send_response(413)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True
        try:
            self.request.unwrap()
        except (OSError, ValueError):
            pass

    def log_message(self, *args):
        pass


def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def remember(sock, name, _context):
        sock.sni = name

    context.sni_callback = remember
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


main()
