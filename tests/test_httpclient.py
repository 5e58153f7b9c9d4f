"""tagestimate.httpclient: Retry-After, back-off, and the whole-body deadline against a trickling server."""

import email.utils
import http.server
import threading
import time

import pytest
import urllib3.response

from tagestimate import httpclient, ndl
from tests.ndl_emulator import NdlEmulator


def test_retry_after_seconds_and_http_date():
    now = time.time()
    assert httpclient.retry_after_seconds("120") == 120.0
    assert httpclient.retry_after_seconds(" 0 ") == 0.0
    assert httpclient.retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert httpclient.retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    for value in (None, "", "soon", "-5", "1.5e9x"):
        assert httpclient.retry_after_seconds(value) is None


def test_backoff_doubles_up_to_the_cap():
    assert [httpclient.backoff_seconds(n, 1.0, 10.0) for n in range(6)] == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize("content_length, old_urllib3", [(True, False), (False, False), (True, True)])
def test_a_trickled_body_is_abandoned_at_the_time_limit(content_length, old_urllib3, monkeypatch):
    if old_urllib3:  # before urllib3 2.3 responses had no shutdown(): the socket is shut directly
        for cls in urllib3.response.HTTPResponse.__mro__:
            if "shutdown" in vars(cls):
                monkeypatch.delattr(cls, "shutdown")
    # One byte every 50 ms never trips the 0.2 s read timeout; the 60 bytes alone take 3 s.
    client = httpclient.HttpClient(timeout=0.2, retries=0)
    with NdlEmulator() as emulator:
        emulator.fail("trickle", interval=0.05, count=60, content_length=content_length)
        url = ndl.iiif_url(emulator.iiif_base, "1", 1, "full")
        started = time.monotonic()
        with pytest.raises(httpclient.FetchError, match="the body took over 0.4 s"):
            client.get(url, max_bytes=1 << 20, accept="image/jpeg")
        elapsed = time.monotonic() - started
        ndl.check_jpeg(client.get(url, max_bytes=1 << 20, accept="image/jpeg"))  # the next answer is fine
    client.close()
    assert 0.35 < elapsed < 0.9


def test_every_network_error_is_a_fetch_error_and_only_a_refusal_is_unreachable():
    client = httpclient.HttpClient(timeout=1.0, retries=1, backoff=0.01)
    with NdlEmulator() as emulator:
        url = ndl.iiif_url(emulator.iiif_base, "1", 1, "full")
        with pytest.raises(httpclient.FetchError, match=r"^over 10 redirects") as loop:
            client.get(emulator.root + "/loop/x", max_bytes=1 << 20)
        assert emulator.count("loop") == httpclient.MAX_REDIRECTS + 1  # a loop is not retried
        emulator.fail("reset", times=2)
        with pytest.raises(httpclient.FetchError, match="Connection reset by peer") as reset:
            client.get(url, max_bytes=1 << 20)
        emulator.fail("redirect", location="gopher://127.0.0.1/x")
        with pytest.raises(httpclient.FetchError, match="^bad URL: No connection adapters") as scheme:
            client.get(url, max_bytes=1 << 20)
        with pytest.raises(httpclient.FetchError, match="^TLS failed") as tls:
            client.get(url.replace("http://", "https://"), max_bytes=1 << 20)
        assert emulator.pending_faults() == 0
        closed = emulator.root  # the emulator's port, closed once it stops
    with pytest.raises(httpclient.Unreachable, match="Connection refused"):
        client.get(closed + "/x", max_bytes=1 << 20)
    client.close()
    # a server that answered and then reset is there: only the refused connection is Unreachable
    assert not any(isinstance(info.value, httpclient.Unreachable) for info in (loop, reset, scheme, tls))


def test_a_redirect_is_followed_without_reading_its_body():
    client = httpclient.HttpClient(timeout=5.0, retries=0)
    size = 256 * 1024 * 1024  # requests alone would read all of it into memory before following
    with NdlEmulator() as emulator:
        target = ndl.iiif_url(emulator.iiif_base, "1", 1, "full")
        emulator.fail("redirect", location=target.replace(emulator.root, ""), body=size)  # a relative Location
        started = time.monotonic()
        ndl.check_jpeg(client.get(ndl.iiif_url(emulator.iiif_base, "2", 2, "full"), max_bytes=1 << 20))
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 5
        while not emulator.oversize_sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [path for _, path in emulator.requests][-1] == target.replace(emulator.root, "")
    client.close()
    assert emulator.oversize_sent and emulator.oversize_sent[0] < size // 4 and elapsed < 3


class _CookieThenRedirect(http.server.BaseHTTPRequestHandler):
    """/start sets a cookie and redirects to /end, which answers with the Cookie header it got."""

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        if self.path == "/start":
            self.send_response(302)
            self.send_header("Set-Cookie", "session=abc123; Path=/")
            self.send_header("Location", "/end")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = (self.headers.get("Cookie") or "no cookie").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_cookie_set_by_a_redirect_goes_with_the_next_request():
    # following redirects by hand must keep what a requests Session did: cookies, as some servers require
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CookieThenRedirect)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    client = httpclient.HttpClient(timeout=2.0, retries=0)
    try:
        assert client.get(f"http://127.0.0.1:{server.server_address[1]}/start", max_bytes=100) == b"session=abc123"
    finally:
        client.close()
        server.shutdown()
        server.server_close()
