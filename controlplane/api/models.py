"""API tokens: shown once at creation, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "cf_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "admin"
        OPERATOR = "operator", "operator"
        VIEWER = "viewer", "viewer"
        NODE = "node", "node (registration only)"

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
        if token is not None:
            cls.objects.filter(pk=token.pk).update(last_used=timezone.now())
        return token

    def allows(self, role: str) -> bool:
        """Does this token's role include ``role``? admin > operator > viewer; node is apart."""
        order = [self.Role.VIEWER, self.Role.OPERATOR, self.Role.ADMIN]
        if self.role == self.Role.NODE or role == self.Role.NODE:
            return self.role in (role, self.Role.ADMIN)
        return order.index(self.role) >= order.index(role)
