"""Sending: SMTP (STARTTLS or implicit TLS, with authentication) and a JSON webhook; and a copy kept in a
local mailbox folder. Blocking; called only from the alert service's delivery thread or the CLI, never
from the proxy's event loop."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from schoolproxy.config import SmtpSettings, WebhookSettings
from schoolproxy.identity.directory import read_secret
from schoolproxy.private import private_dir


class DeliveryError(Exception):
    """Sending failed; the outbox keeps the message and tries again later."""


def _path(p: Path | None, base: Path) -> Path | None:
    return None if p is None else (p if p.is_absolute() else (base / p).resolve())


def _compose(sender: str, recipient: str | None, subject: str, body: str, ref: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    if recipient:
        msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    # Stable per message so a receiving system can drop a duplicate after a crash between send and mark.
    msg["Message-ID"] = make_msgid(idstring=f"schoolproxy-{ref}", domain="schoolproxy.invalid")
    msg["X-Schoolproxy-Alert"] = ref
    msg.set_content(body)
    return msg


def write_to_mailbox(folder: Path, subject: str, body: str, ref: str) -> Path:
    """Keep a copy of the message in a Maildir folder on the gateway (``mutt -f FOLDER`` reads it), private
    to the service: written whole under ``tmp/``, then moved into ``new/``, as Maildir readers expect."""
    msg = _compose("schoolproxy", None, subject, body, ref)
    for sub in ("", "tmp", "new", "cur"):
        private_dir(folder / sub)
    name = f"{time.time():.6f}.{os.getpid()}_{ref}.schoolproxy"
    tmp = folder / "tmp" / name
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msg.as_bytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / "new" / name)
    except OSError as e:
        raise DeliveryError(f"mailbox {folder}: {type(e).__name__}: {str(e)[:200]}") from None
    return folder / "new" / name


def send_email(smtp: SmtpSettings, base_dir: Path, recipient: str, subject: str, body: str, ref: str) -> None:
    msg = _compose(smtp.sender, recipient, subject, body, ref)
    context = ssl.create_default_context(cafile=str(_path(smtp.ca_file, base_dir)) if smtp.ca_file else None)
    try:
        if smtp.security == "tls":
            server = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_seconds, context=context)
        else:
            server = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
        with server:
            server.ehlo()
            if smtp.security == "starttls":
                server.starttls(context=context)
                server.ehlo()
            if smtp.username:
                password = read_secret(_path(smtp.password_file, base_dir)) if smtp.password_file else ""
                server.login(smtp.username, password)
            server.send_message(msg)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as e:
        raise DeliveryError(f"SMTP {smtp.host}:{smtp.port}: {type(e).__name__}: {str(e)[:200]}") from None


def send_webhook(hook: WebhookSettings, base_dir: Path, payload: dict) -> None:
    data = json.dumps(payload, default=str).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "schoolproxy"}
    if hook.secret_file:
        key = read_secret(_path(hook.secret_file, base_dir)).encode()
        headers["X-Schoolproxy-Signature"] = "sha256=" + hmac.new(key, data, hashlib.sha256).hexdigest()
    req = urllib.request.Request(hook.url, data=data, headers=headers, method="POST")
    try:
        with _OPENER.open(req, timeout=hook.timeout_seconds) as resp:
            if not 200 <= resp.status < 300:
                raise DeliveryError(f"webhook answered {resp.status}")
    except urllib.error.HTTPError as e:
        raise DeliveryError(f"webhook answered {e.code}") from None
    except (OSError, ValueError) as e:
        raise DeliveryError(f"webhook {type(e).__name__}: {str(e)[:200]}") from None


# Straight to the receiver: never through an HTTP proxy named in the environment (that could be us).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
