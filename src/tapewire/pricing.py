"""What an exchange cost: per-million-token prices, and a Usage priced with them.

The packaged table (tapewire/data/prices.json) holds the providers' published list prices as of
the date it names. A user's own file, in the same shape, replaces entries key by key; it is
found at the path given, else $TAPEWIRE_PRICES, else <user config dir>/tapewire/prices.json.
An unknown price stays unknown (None): a cost of 0 would claim a model is free.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import platformdirs

from tapewire.model import Usage

ENV_VAR = "TAPEWIRE_PRICES"
_PER = 1_000_000
_REQUIRED = ("input", "output", "cache_read", "cache_write")

# What may follow a key in a model id and still be the same model at the same price: a snapshot
# date (claude-sonnet-4-5-20250929, gpt-4o-2024-08-06) or the -latest alias. Anything else
# (gpt-5-pro, o3-mini, claude-opus-4-8) is a different model and gets no price by accident.
_VARIANT = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2}|latest)")


class PriceFileError(ValueError):
    """A prices file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float  # a 5-minute cache write (Anthropic); 0 where writing the cache is free
    cache_write_1h: float | None = None  # a 1-hour cache write; None = priced as cache_write
    provider: str | None = None


@dataclass
class PriceTable:
    models: dict[str, Price] = field(default_factory=dict)
    providers: dict[str, Price] = field(default_factory=dict)  # a price for every model of one
    as_of: str | None = None
    sources: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """The packaged prices, overridden by the user's file where there is one."""
        table = cls.from_json(_packaged(), "the packaged prices.json")
        user = _user_file(path)
        if user is not None:
            table.update(cls.from_json(_read(user), str(user)))
        return table

    @classmethod
    def from_json(cls, data: bytes, name: str) -> PriceTable:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise PriceFileError(f"{name}: not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise PriceFileError(f"{name}: expected a JSON object at the top")
        as_of, sources = doc.get("as_of"), doc.get("sources")
        return cls(
            models=_section(doc, "models", name),
            providers=_section(doc, "providers", name),
            as_of=as_of if isinstance(as_of, str) else None,
            sources=[s for s in sources if isinstance(s, str)] if isinstance(sources, list) else [],
        )

    def update(self, other: PriceTable) -> None:
        """Entries of `other` replace entries of the same key."""
        self.models.update(other.models)
        self.providers.update(other.providers)
        if other.as_of:
            self.as_of = other.as_of
        self.sources.extend(s for s in other.sources if s not in self.sources)

    def lookup(self, model: str | None, provider: str | None = None) -> Price | None:
        """The price of `model`: its own key, else the longest key it is a dated or -latest
        variant of. A provider with a price of its own (local Ollama: free) prices every model it
        serves, unless the table names that model for that provider."""
        entry = self._model(model) if model else None
        if provider is not None and provider in self.providers:
            if entry is not None and entry.provider == provider:
                return entry
            return self.providers[provider]
        return entry

    def _model(self, model: str) -> Price | None:
        if model in self.models:
            return self.models[model]
        bases = [
            k for k in self.models if model.startswith(k) and _VARIANT.fullmatch(model, len(k))
        ]
        return self.models[max(bases, key=len)] if bases else None


def cost(usage: Usage, price: Price | None) -> float | None:
    """USD for one exchange, or None when the price or every token count is unknown.

    input_tokens counts the whole prompt, cache reads and writes included, so the uncached part
    is what is left after both; reasoning tokens are already part of output_tokens.
    """
    counts = (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens)
    if price is None or all(n is None for n in (*counts, usage.cache_write_tokens)):
        return None
    read = usage.cache_read_tokens or 0
    write = usage.cache_write_tokens or 0
    write_1h = min(usage.cache_write_1h_tokens or 0, write)
    uncached = max((usage.input_tokens or 0) - read - write, 0)
    rate_1h = price.cache_write_1h if price.cache_write_1h is not None else price.cache_write
    total = (
        uncached * price.input
        + read * price.cache_read
        + (write - write_1h) * price.cache_write
        + write_1h * rate_1h
        + (usage.output_tokens or 0) * price.output
    )
    return round(total / _PER, 9)


def _packaged() -> bytes:
    return (resources.files("tapewire") / "data" / "prices.json").read_bytes()


def _user_file(path: str | Path | None) -> Path | None:
    """The user's prices file: one named (argument or environment) must exist; the default one
    is used only when it does."""
    named = path if path is not None else os.environ.get(ENV_VAR) or None
    if named is not None:
        return Path(named).expanduser()
    default = Path(platformdirs.user_config_dir("tapewire")) / "prices.json"
    return default if default.is_file() else None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PriceFileError(f"{path}: cannot read prices: {e.strerror or e}") from None


def _section(doc: dict[str, Any], key: str, name: str) -> dict[str, Price]:
    section = doc.get(key, {})
    if not isinstance(section, dict):
        raise PriceFileError(f"{name}: {key!r} must be an object of prices")
    return {k: _price(v, f"{name}: {key}[{k!r}]") for k, v in section.items()}


def _price(entry: Any, where: str) -> Price:
    if not isinstance(entry, dict):
        raise PriceFileError(f"{where} must be an object")
    values: dict[str, float] = {}
    for key in (*_REQUIRED, "cache_write_1h"):
        value = entry.get(key)
        if value is None and key == "cache_write_1h":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise PriceFileError(f"{where}: {key!r} must be a number >= 0 (USD per Mtok)")
        values[key] = float(value)
    provider = entry.get("provider")
    if provider is not None and not isinstance(provider, str):
        raise PriceFileError(f"{where}: 'provider' must be a string")
    return Price(
        input=values["input"],
        output=values["output"],
        cache_read=values["cache_read"],
        cache_write=values["cache_write"],
        cache_write_1h=values.get("cache_write_1h"),
        provider=provider,
    )
