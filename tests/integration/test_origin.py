"""Credentials stay with their registry: a front of the test's own (on one
loopback port) passes every request to a real docker-registry with basic
auth, but answers the upload POST with a Location on another origin (a
second server on another port, which records every request's headers and
answers 401 with a Basic challenge, as storage that wants credentials
would). qsnap must send no Authorization there, nor answer its challenge
with the user's credentials."""

import http.client
import http.server
import os
import threading

from harness import check, qsnap
from test_registry import SECRET, one_line, registry


class Proxy:
    """Passes requests to the registry at target; records each request's
    method, path and headers. rewrite(location) changes the Location of
    the registry's answers (the front's trick); answer(method, path) may
    return (status, headers, body) to send instead of the registry's
    answer."""

    def __init__(self, target, rewrite=None, answer=None):
        self.requests = []
        proxy = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self):
                proxy.requests.append((self.command, self.path, dict(self.headers)))
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                fake = answer(self.command, self.path) if answer else None
                if fake:
                    self.send_response(fake[0])
                    for k, v in fake[1].items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(fake[2])))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(fake[2])
                    return
                conn = http.client.HTTPConnection(target, timeout=60)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=hdrs)
                r = conn.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() in ("transfer-encoding", "connection", "content-length"):
                        continue
                    if k.lower() == "location" and rewrite:
                        v = rewrite(v)
                    self.send_header(k, v)
                if self.command == "HEAD":
                    self.send_header("Content-Length", r.getheader("Content-Length") or "0")
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            def handle_safely(self):
                try:
                    self.handle_one()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a refused 100 MiB answer)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_safely

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_upload_location_elsewhere_gets_no_credentials(t):
    vm = t.vm()
    qsnap("start", vm.dir)
    vm.save("S")
    vm.stop()
    with registry(t, users={"alice": SECRET}) as reg:
        # The other origin asks for Basic credentials, or names a token
        # realm (its own /token): neither gets the user's credentials.
        for challenge in ('Basic realm="storage"', None):
            push_elsewhere(t, vm, reg, challenge)


def push_elsewhere(t, vm, reg, challenge):
    other = None

    def answer(method, path):
        if path.startswith("/token"):
            return 200, {"Content-Type": "application/json"}, b'{"token": "stolen"}'
        return 401, {"WWW-Authenticate": challenge or
                     f'Bearer realm="http://{other.host}/token",service="storage"'}, b"{}"
    other = Proxy(reg.host, answer=answer)

    def elsewhere(loc):
        path = loc.split(reg.host, 1)[-1] if loc.startswith("http") else loc
        return f"http://{other.host}{path}"
    front = Proxy(reg.host, rewrite=elsewhere)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QSNAP_REGISTRY")}
        env.update(HOME=os.path.join(t.dir, "nohome"), DOCKER_CONFIG="",
                   QSNAP_REGISTRY_USER="alice", QSNAP_REGISTRY_PASSWORD=SECRET)
        p = qsnap("push", "--insecure", "--quiet", vm.dir, "S", f"{front.host}/team/vm", ok=False,
                  env=env)
        what = challenge or "a token realm"
        check(one_line(p) and f"which is not registry {front.host}" in p.stderr
              and "sends credentials to the registry itself only" in p.stderr,
              f"{what}: push with an upload elsewhere: {p.stderr}")
        check(any("Authorization" in h for _, _, h in front.requests),
              f"{what}: the front (the registry's own origin) never got the credentials")
        check(other.requests, f"{what}: the other origin saw no request: the test tested nothing")
        leaked = [(m, path) for m, path, h in other.requests
                  if any(k.lower() == "authorization" for k in h) or path.startswith("/token")]
        check(not leaked, f"{what}: credentials reached the other origin: {leaked}")
    finally:
        front.stop()
        other.stop()
