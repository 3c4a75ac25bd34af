"""API tokens (shown once, stored as a SHA-256 hash) and audit entries."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db import models
from django.utils import timezone

from controlplane.accounts.roles import Role, allows

TOKEN_PREFIX = "cf_"
LAST_USED_STEP = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(models.Model):
    Role = Role

    name = models.CharField(max_length=100, unique=True)
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.OPERATOR)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters, so an operator can tell tokens apart without the secret.
    prefix = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    class Meta:
        ordering = ["name"]
        db_table = "api_apitoken"  # created by the api app before tokens moved here

    def __str__(self) -> str:
        return f"{self.name} ({self.role}, {self.prefix}…)"

    @classmethod
    def create(cls, name: str, role: str = Role.OPERATOR) -> tuple[ApiToken, str]:
        """A new token and its secret; the secret is never retrievable again."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            name=name, role=role, key_hash=hash_token(secret), prefix=secret[:10]
        )
        return token, secret

    @classmethod
    def authenticate(cls, secret: str) -> ApiToken | None:
        if not secret:
            return None
        token = cls.objects.filter(key_hash=hash_token(secret), revoked=False).first()
        now = timezone.now()
        # At most one write a minute per token: clients polling every second must not write.
        if token is not None and (
            token.last_used is None or now - token.last_used > LAST_USED_STEP
        ):
            cls.objects.filter(pk=token.pk).update(last_used=now)
        return token

    def allows(self, role: str) -> bool:
        return allows(self.role, role)


class AuditEntry(models.Model):
    """One thing someone did. Written by :func:`controlplane.accounts.audit.record` only."""

    at = models.DateTimeField(default=timezone.now)
    actor_kind = models.CharField(max_length=10)  # user, token, anonymous, system
    actor = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=40)
    target = models.CharField(max_length=200, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [
            models.Index(fields=["-at", "-id"], name="audit_newest"),
            models.Index(fields=["action", "-at"], name="audit_by_action"),
        ]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"
