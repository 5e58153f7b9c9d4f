"""The one place that talks HTTP: GETs with retries, back-off, Retry-After, byte caps and a deadline.

`HttpClient.get` returns the body of a 200 answer or raises `FetchError` (`Unreachable` when no
attempt could connect, `TooLarge` over the byte cap); `Interrupted` when its stop event is set.
Every network error is one of these, never a `requests` or `urllib3` exception: a caller counts
the failure of one document or image and goes on.
It knows nothing of NDL: the services' URLs and answers are `tagestimate.ndl`'s business.
"""

import email.utils
import logging
import re
import socket
import threading
import time
import urllib.parse

import requests
import requests.adapters
import requests.cookies
import urllib3.exceptions

from tagestimate.files import plural

log = logging.getLogger(__name__)

# Defaults of the client, which newdataclawer's flags (through crawl.CrawlOptions) take too.
TIMEOUT = 30.0     # seconds to wait for an answer; the whole body must arrive within twice that
RETRIES = 5        # retries after a connection error, timeout, 429 or 5xx
BACKOFF = 1.0      # seconds before the first retry, doubling each time
MAX_WAIT = 60.0    # longest wait before a retry, Retry-After included
MAX_REDIRECTS = 10  # more than this is a loop, or a server not worth following
_CHUNK = 64 * 1024


class FetchError(Exception):
    """A request that failed for good (after retries, or a status not worth retrying)."""


class Unreachable(FetchError):
    """Every attempt failed to connect: the server is down or the base URL is wrong."""


class TooLarge(FetchError):
    """A body over the byte cap; it was not read further."""


class Interrupted(Exception):
    """The caller asked the client to stop (Ctrl-C) while a request was under way."""


def retry_after_seconds(value, now=None):
    """Seconds asked for by a Retry-After header (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def backoff_seconds(attempt, base, cap):
    """Exponential back-off before retry number `attempt` (0-based), at most `cap`."""
    return min(cap, base * (2 ** attempt))


class HttpClient:
    """GETs with capped streaming and exponential back-off that honours Retry-After.

    Retries connection errors, timeouts, 429 and 5xx; a Retry-After pauses every thread
    using this client, since the server asked the client, not one request, to wait.
    A body must be complete within twice the timeout of the request's start (`_Deadline`).
    """

    def __init__(self, *, timeout=TIMEOUT, retries=RETRIES, backoff=BACKOFF, max_wait=MAX_WAIT, pool_size=10,
                 stop_event=None, user_agent="tagestimate-crawler"):
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.stop_event = stop_event or threading.Event()
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = user_agent
        self._lock = threading.Lock()
        self._resume_at = 0.0  # time.monotonic() before which nobody sends

    def close(self):
        self.session.close()

    def _wait(self, seconds):
        if self.stop_event.wait(max(0.0, seconds)):
            raise Interrupted()

    def get(self, url, *, params=None, max_bytes, accept="*/*"):
        """The body of a 200 answer to GET url; FetchError (or a subclass) when it cannot be had."""
        connect_failures = 0
        for attempt in range(self.retries + 1):
            with self._lock:
                pause = self._resume_at - time.monotonic()
            self._wait(pause)
            try:
                return self._attempt(url, params, max_bytes, accept)
            except _Retry as error:
                reason = str(error)
                connect_failures += error.connect
                if attempt == self.retries:
                    break
                if error.retry_after is not None:
                    delay = min(self.max_wait, error.retry_after)
                    with self._lock:
                        self._resume_at = max(self._resume_at, time.monotonic() + delay)
                else:
                    delay = backoff_seconds(attempt, self.backoff, self.max_wait)
            log.warning("%s: %s; retry %d of %d in %.1f s", shorten(url), reason, attempt + 1, self.retries, delay)
            self._wait(delay)
        error_class = Unreachable if connect_failures == self.retries + 1 else FetchError
        raise error_class(f"{reason}; gave up after {self.retries + 1} {plural(self.retries + 1, 'attempt')}")

    def _attempt(self, url, params, max_bytes, accept):
        started = time.monotonic()
        try:
            response = self._follow(url, params, accept)
        except requests.exceptions.SSLError as error:  # a certificate or protocol a retry will not change
            raise FetchError(f"TLS failed: {_cause(error)}") from None
        except requests.ConnectionError as error:  # ConnectTimeout and resets included
            raise _Retry(f"connection failed: {_cause(error)}", connect=_never_connected(error)) from None
        except requests.Timeout:
            raise _Retry(f"no answer within {self.timeout:g} s") from None
        except requests.TooManyRedirects:
            raise FetchError(f"over {MAX_REDIRECTS} redirects (a redirect loop?)") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, ValueError) as error:
            # A URL, or a redirect's Location, that cannot be requested (scheme, host, port): no retry mends it.
            raise FetchError(f"bad URL: {_cause(error)}") from None
        with response:
            if response.status_code == 429 or 500 <= response.status_code <= 599:
                raise _Retry(f"HTTP {response.status_code}",
                             retry_after=retry_after_seconds(response.headers.get("Retry-After")))
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code}")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise TooLarge(f"the body is {int(length)} bytes, over the {max_bytes} byte cap")
            # A server trickling bytes never trips the per-read timeout, and one read of a chunk
            # can last for ever: a timer stops the reads at the deadline, wherever they are.
            too_slow = f"the body took over {2 * self.timeout:g} s"
            deadline = _Deadline(response.raw, started + 2 * self.timeout)
            chunks, total = [], 0
            try:
                for chunk in response.iter_content(_CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise TooLarge(f"the body is over the {max_bytes} byte cap")
                    if self.stop_event.is_set():
                        raise Interrupted()
                    if deadline.passed():
                        raise _Retry(too_slow)
                    chunks.append(chunk)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as error:  # resets, bad chunks, ...
                raise _Retry(too_slow if deadline.fired else f"the body was cut off or stalled: {_cause(error)}") \
                    from None
            finally:
                deadline.cancel()
            if deadline.fired:  # the cut may look like the end of a body sent without a length
                raise _Retry(too_slow)
            return b"".join(chunks)

    def _follow(self, url, params, accept):
        """The streamed answer to GET url after at most MAX_REDIRECTS redirects.

        Redirects are followed here, each sent through the adapter: a Session reads every
        redirect's whole body into memory, with no cap, even with allow_redirects=False.
        """
        for _ in range(MAX_REDIRECTS + 1):
            request = self.session.prepare_request(requests.Request(
                "GET", url, params=params, headers={"Accept": accept, "Accept-Encoding": "identity"}))
            # what Session.request adds: proxies and CA bundle from the environment; cookies come with prepare_request
            settings = self.session.merge_environment_settings(request.url, {}, True, None, None)
            response = self.session.get_adapter(request.url).send(request, timeout=self.timeout, **settings)
            requests.cookies.extract_cookies_to_jar(self.session.cookies, request, response.raw)  # as Session.send
            try:
                location = self.session.get_redirect_target(response)
            except ValueError:  # a Location that is not UTF-8
                response.close()
                raise
            if location is None:
                return response
            response.close()  # unread: the connection is dropped rather than drained
            url, params = urllib.parse.urljoin(response.url, location), None
        raise requests.TooManyRedirects()


class _Deadline:
    """Shuts the reading side of `raw` (a urllib3 response) at `deadline` (time.monotonic()).

    The shutdown wakes a read blocked in another thread, which then sees the body end or
    break off; `fired` says the deadline did it. After `cancel()` returns nothing more
    happens, so a connection that was not cut can go back to the pool.
    """

    def __init__(self, raw, deadline):
        self.deadline = deadline
        self.fired = False
        self._raw = raw
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def passed(self):
        return self.fired or time.monotonic() > self.deadline

    def _fire(self):
        with self._lock:
            if self._done:
                return
            self.fired = True
            _shutdown_reads(self._raw)

    def cancel(self):
        with self._lock:
            self._done = True
        self._timer.cancel()


def _shutdown_reads(raw):
    """Make reads of `raw` return at once, from any thread (the connection is then closed)."""
    try:
        raw.shutdown()  # urllib3 >= 2.3
        return
    except (AttributeError, NotImplementedError):
        pass  # an older urllib3: shut the socket under http.client's response ourselves
    except (ValueError, RuntimeError, OSError):
        return  # already closed or back in the pool: the body is over
    if getattr(raw, "connection", None) is None:
        return
    stream = getattr(getattr(raw, "_fp", None), "fp", None)  # http.client's socket file, None once read
    sock = getattr(getattr(stream, "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RD)
        except OSError:
            pass


class _Retry(Exception):
    """An attempt worth repeating; `connect` when no connection could be made at all."""

    def __init__(self, message, retry_after=None, connect=False):
        super().__init__(message)
        self.retry_after = retry_after
        self.connect = connect


def shorten(error):
    """`error` (or any object) as text of at most 160 characters."""
    text = str(error)
    return text if len(text) <= 160 else text[:157] + "..."


def _reasons(error):
    """`error` and the reasons nested in it (requests wraps urllib3, which wraps socket errors)."""
    reason = error
    for _ in range(10):
        yield reason
        inner = getattr(reason, "reason", None)
        if not isinstance(inner, BaseException):  # ProtocolError("Connection aborted.", ConnectionResetError(...))
            inner = next((arg for arg in reason.args if isinstance(arg, BaseException)), None)
        if inner is None:
            return
        reason = inner


def _never_connected(error):
    """Whether a connection error came before any connection (refused, no such host, connect timeout),
    rather than from a server that accepted and then reset or closed it."""
    # urllib3's NewConnectionError (refused, DNS) is a ConnectTimeoutError too
    return isinstance(error, requests.ConnectTimeout) or any(
        isinstance(reason, urllib3.exceptions.ConnectTimeoutError) for reason in _reasons(error))


def _cause(error):
    """The innermost reason of a requests/urllib3 error, without their object reprs."""
    *_, reason = _reasons(error)
    text = re.sub(r"<[^<>]*>: |\b\w*Connection(Pool)?\(host=[^)]*\): ", "", str(reason))
    return shorten(text or type(reason).__name__)
