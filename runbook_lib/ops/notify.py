"""Stakeholder notices: a Slack-compatible webhook, e-mail over SMTP, and always a file in the outbox.

Every channel is tried; each delivery is recorded with its result, and a failed channel
is reported with the reason rather than hidden.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from pathlib import Path

import requests

from runbook_lib.config import redact
from runbook_lib.config.params import Notifications
from runbook_lib.values import now


@dataclass
class Delivery:
    channel: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _outbox(campaign_dir: Path, subject: str, body: str) -> Delivery:
    folder = campaign_dir / "outbox"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{now().strftime('%Y%m%dT%H%M%S%fZ')}-notice.txt"  # two notices in one second both kept
    path.write_text(f"Subject: {subject}\n\n{body}\n")
    return Delivery("outbox", True, str(path))


def _webhook(spec: Notifications, base_dir: Path, subject: str, body: str) -> Delivery:
    ref = spec.webhook_url
    assert ref is not None
    try:
        url = ref.absolute(base_dir).resolve().reveal()
        response = requests.post(url, json={"text": f"*{subject}*\n{body}"}, timeout=10)
        if response.status_code >= 300:
            return Delivery("webhook", False, redact.text(f"{ref}: HTTP {response.status_code} {response.text[:120]}"))
        return Delivery("webhook", True, f"{ref}: HTTP {response.status_code}")
    except Exception as exc:  # any failure is a failed delivery, recorded with its reason
        return Delivery("webhook", False, redact.text(f"{ref}: {type(exc).__name__}: {exc}"))


def _smtp(notifications: Notifications, base_dir: Path, subject: str, body: str) -> Delivery:
    spec = notifications.smtp
    assert spec is not None
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = subject, spec.sender, ", ".join(spec.recipients)
    message.set_content(body)
    try:
        with smtplib.SMTP(spec.host, spec.port, timeout=10) as smtp:
            if spec.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if spec.username and spec.password:
                smtp.login(spec.username, spec.password.absolute(base_dir).resolve().reveal())
            refused = smtp.send_message(message)
        if refused:
            return Delivery("smtp", False, f"refused recipients: {sorted(refused)}")
        return Delivery("smtp", True, f"{spec.host}:{spec.port} to {len(spec.recipients)} recipients")
    except (OSError, smtplib.SMTPException) as exc:
        return Delivery("smtp", False, redact.text(f"{spec.host}:{spec.port}: {type(exc).__name__}: {exc}"))


def send(notifications: Notifications, base_dir: Path, campaign_dir: Path, subject: str,
         body: str) -> list[Delivery]:
    """Every configured channel, then the outbox file (always); file: secrets anchored at base_dir."""
    deliveries = []
    if notifications.webhook_url:
        deliveries.append(_webhook(notifications, base_dir, subject, body))
    if notifications.smtp:
        deliveries.append(_smtp(notifications, base_dir, subject, body))
    deliveries.append(_outbox(campaign_dir, subject, body))
    return deliveries


def summary(deliveries: list[Delivery]) -> str:
    """One line for the step's result: how many channels took it, and which failed (never hidden)."""
    failed = [d.channel for d in deliveries if not d.ok]
    return f"sent to {len(deliveries) - len(failed)} of {len(deliveries)} channels" + (
        f"; FAILED: {', '.join(failed)}" if failed else "")
