"""Reading a Scrapyd call's parameters as Scrapyd reads them: query string and form body alike."""

from __future__ import annotations

from django.http import HttpRequest

from controlplane.scrapydapi.responses import ScrapydRefusal


class Params:
    """One call's parameters; ``take`` removes what it reads, so the rest are spider args."""

    def __init__(self, request: HttpRequest) -> None:
        self.values: dict[str, list[str]] = {}
        for source in (request.GET, request.POST):
            for key in source:
                self.values.setdefault(key, []).extend(source.getlist(key))
        self.files = request.FILES

    def take(self, name: str, *, required: bool = True, default: str | None = None) -> str | None:
        values = self.values.pop(name, None)
        if not values:
            if required:
                raise ScrapydRefusal(f"'{name}' parameter is required")
            return default
        return values[0]

    def take_all(self, name: str) -> list[str]:
        return self.values.pop(name, [])

    def rest(self) -> dict[str, str]:
        """What is left: the spider's arguments (first value of each, as Scrapyd keeps)."""
        return {key: values[0] for key, values in self.values.items() if values}
