"""Sending one message through one channel: a signed webhook, email, or apprise.

Every call is bounded (CRAWLFLEET_ALERT_SEND_TIMEOUT, EMAIL_TIMEOUT, apprise's own timeouts) and
raises :class:`SendError` with a message safe to show: no secret, no apprise token.

The webhook's headers (docs/ALERTS.md tells receivers how to verify them):

- ``X-Crawlfleet-Delivery``: the delivery's id, the same on every retry (de-duplicate by it);
- ``X-Crawlfleet-Timestamp``: Unix seconds when this attempt was signed;
- ``X-Crawlfleet-Signature``: ``sha256=`` + hex HMAC-SHA256 of ``<timestamp>.<body>`` keyed with
  the channel's secret (absent when the channel has none);
- ``X-Crawlfleet-Event``: the newest event's kind (``test`` for a test alert).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from controlplane.alerts.messages import Message
from controlplane.alerts.models import Channel

DELIVERY_HEADER = "X-Crawlfleet-Delivery"
TIMESTAMP_HEADER = "X-Crawlfleet-Timestamp"
SIGNATURE_HEADER = "X-Crawlfleet-Signature"
EVENT_HEADER = "X-Crawlfleet-Event"
MAX_ERROR = 1000


class SendError(Exception):
    """A channel did not take the message; the text is safe to store and show."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, *, tolerance: float = 300
) -> bool:
    """What a receiver does (Python): the signature matches and the timestamp is recent."""
    try:
        fresh = abs(time.time() - int(timestamp)) <= tolerance
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def send(channel: Channel, message: Message, delivery_id: str) -> None:
    if channel.kind == Channel.Kind.WEBHOOK:
        webhook(channel, message, delivery_id)
    elif channel.kind == Channel.Kind.EMAIL:
        email(channel, message)
    elif channel.kind == Channel.Kind.APPRISE:
        apprise_notify(channel, message)
    else:
        raise SendError(f"unknown channel kind {channel.kind!r}")


def webhook(channel: Channel, message: Message, delivery_id: str) -> None:
    body = json.dumps(message.payload, separators=(",", ":"), sort_keys=True, default=str).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "crawlfleet-alerts",
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: timestamp,
        EVENT_HEADER: message.kind or "alert",
    }
    if channel.secret:
        headers[SIGNATURE_HEADER] = sign(channel.secret, timestamp, body)
    where = urlsplit(channel.url).netloc.rpartition("@")[2]  # never the path or query: tokens
    try:
        response = requests.post(
            channel.url,
            data=body,
            headers=headers,
            timeout=settings.CRAWLFLEET_ALERT_SEND_TIMEOUT,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise SendError(f"webhook {where}: {type(exc).__name__}") from exc
    if not 200 <= response.status_code < 300:
        text = " ".join(response.text[:200].split())
        raise SendError(f"webhook {where} answered HTTP {response.status_code}: {text}"[:MAX_ERROR])


def email(channel: Channel, message: Message) -> None:
    try:
        connection = get_connection(fail_silently=False)
        EmailMessage(
            subject=message.subject,
            body=message.text,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=list(channel.recipients),
            connection=connection,
        ).send()
    except Exception as exc:  # smtplib, socket and backend errors alike
        raise SendError(f"email: {type(exc).__name__}: {exc}"[:MAX_ERROR]) from exc


def redact(text: str, urls: list[str]) -> str:
    """``text`` without any part of ``urls`` that could be a token."""
    for url in urls:
        rest = url.partition("://")[2]
        host = rest.rpartition("@")[2].split("/")[0].split(":")[0]
        parts = [rest] + [p for p in rest.replace("?", "/").replace("&", "/").split("/") if p]
        pieces = {
            piece
            for part in parts
            for piece in (part, *part.replace("@", ":").replace("=", ":").split(":"))
            if len(piece) >= 6 and piece != host
        }
        for piece in sorted(pieces, key=len, reverse=True):  # whole URL first, then its parts
            text = text.replace(piece, "***")
    return text


def apprise_notify(channel: Channel, message: Message) -> None:
    import apprise

    notifier = apprise.Apprise()
    for url in channel.apprise_urls:
        if not notifier.add(url):
            raise SendError(f"apprise does not know the URL scheme {url.partition('://')[0]!r}")
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
        ok = notifier.notify(title=message.subject, body=message.text)
        logs = captured.getvalue() if hasattr(captured, "getvalue") else ""
    if not ok:
        detail = " ".join(redact(logs, list(channel.apprise_urls)).split())[-MAX_ERROR + 40 :]
        raise SendError(f"apprise: not delivered: {detail or 'no detail'}")
