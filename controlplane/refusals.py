"""How the domain says no: one exception every face turns into its own answer.

The REST API answers the JSON error envelope with ``status``; the dashboard shows ``fields``
beside the form's inputs and ``message`` above them. Raised before anything is written.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError


class Refused(Exception):
    """An operation was refused; ``status`` is the HTTP status a face should answer."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid",
        status: int = 422,
        fields: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.fields = fields or {}


def field_errors(exc: ValidationError) -> dict[str, list[str]]:
    """A Django ValidationError as ``{field: [messages]}`` (non-field errors under ``__all__``)."""
    if hasattr(exc, "error_dict"):
        return {key: list(value) for key, value in exc.message_dict.items()}
    return {"__all__": list(exc.messages)}


def summary(fields: dict[str, list[str]]) -> str:
    """Every field's messages in one line, for a message above a form or an error envelope."""
    parts = [
        f"{name}: {'; '.join(messages)}" if name != "__all__" else "; ".join(messages)
        for name, messages in fields.items()
    ]
    return "; ".join(parts) or "invalid request"
