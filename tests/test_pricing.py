"""Prices: the packaged table, the user's overrides, model-id matching and the cost formula."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import orjson
import platformdirs
import pytest

from tapewire.model import Usage
from tapewire.pricing import ENV_VAR, Price, PriceFileError, PriceTable, cost


@pytest.fixture(autouse=True)
def no_user_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Keep the developer's own prices file and environment out of every test."""
    config = tmp_path / "config"
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(platformdirs, "user_config_dir", lambda *a, **k: str(config))
    yield config


@pytest.fixture
def table() -> PriceTable:
    return PriceTable.load()


def write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc))
    return path


# ---- the packaged table --------------------------------------------------------------------


def test_packaged_file_is_readable_as_package_data() -> None:
    data = orjson.loads((resources.files("tapewire") / "data" / "prices.json").read_bytes())
    assert data["as_of"]
    assert all(url.startswith("https://") for url in data["sources"])


def test_packaged_table_covers_the_current_models(table: PriceTable) -> None:
    for model in [
        "claude-opus-4-5",
        "claude-opus-4-1",
        "claude-sonnet-4-6",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-3-5-haiku",
        "claude-3-7-sonnet",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-5-codex",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4o",
        "gpt-4o-mini",
        "o3",
        "o4-mini",
    ]:
        assert table.lookup(model) is not None, model
    assert table.as_of is not None


def test_anthropic_entries_follow_the_published_multipliers(table: PriceTable) -> None:
    # Haiku 3 is the exception the price page itself shows: $0.30 writes, $0.03 reads.
    anthropic = {
        k: p for k, p in table.models.items() if p.provider == "anthropic" and k != "claude-3-haiku"
    }
    assert anthropic
    for key, p in anthropic.items():
        assert p.cache_write == pytest.approx(1.25 * p.input), key
        assert p.cache_write_1h == pytest.approx(2 * p.input), key
        assert p.cache_read == pytest.approx(0.1 * p.input), key


def test_openai_entries_have_no_cache_write_charge(table: PriceTable) -> None:
    openai = {k: p for k, p in table.models.items() if p.provider == "openai"}
    assert openai
    for key, p in openai.items():
        assert p.cache_write == 0, key
        assert p.cache_read <= p.input, key


def test_published_figures(table: PriceTable) -> None:
    assert table.lookup("claude-sonnet-4-5") == Price(3, 15, 0.3, 3.75, 6, "anthropic")
    assert table.lookup("claude-opus-4-5") == Price(5, 25, 0.5, 6.25, 10, "anthropic")
    assert table.lookup("claude-opus-4-1") == Price(15, 75, 1.5, 18.75, 30, "anthropic")
    assert table.lookup("claude-haiku-4-5") == Price(1, 5, 0.1, 1.25, 2, "anthropic")
    assert table.lookup("gpt-5") == Price(1.25, 10, 0.125, 0, None, "openai")
    assert table.lookup("gpt-4o-mini") == Price(0.15, 0.6, 0.075, 0, None, "openai")


# ---- lookup --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # a snapshot with a price of its own
    ],
)
def test_dated_variants_take_their_base_price(table: PriceTable, model: str, key: str) -> None:
    assert table.lookup(model) == table.models[key]


@pytest.mark.parametrize(
    "model",
    ["o3-pro", "o3-mini", "gpt-5-pro", "claude-opus-4-8", "gpt-4o-realtime-preview", "gpt-5.1"],
)
def test_a_different_model_sharing_a_prefix_is_unknown(table: PriceTable, model: str) -> None:
    """Unknown beats wrong: gpt-5-pro is not gpt-5 at a tenth of its price."""
    assert table.lookup(model) is None


def test_unknown_model(table: PriceTable) -> None:
    assert table.lookup("some-model-nobody-priced") is None
    assert table.lookup(None) is None
    assert table.lookup("") is None
    assert table.lookup("gpt-4o", provider="anthropic") == table.models["gpt-4o"]


def test_local_models_cost_nothing(table: PriceTable) -> None:
    price = table.lookup("llama3.2:latest", provider="ollama")
    assert price is not None
    usage = Usage(input_tokens=1200, output_tokens=300)
    assert cost(usage, price) == 0.0
    assert table.lookup("gpt-4o", provider="ollama") == price  # served locally, whatever its name
    assert table.lookup("llama3.2:latest") is None  # no provider said: not known to be free


# ---- cost ----------------------------------------------------------------------------------


def test_cost_of_an_anthropic_turn_with_every_kind_of_token(table: PriceTable) -> None:
    usage = Usage(
        input_tokens=10_000,  # 2,000 uncached + 6,000 read + 2,000 written (500 of them for 1 h)
        output_tokens=1_000,
        cache_read_tokens=6_000,
        cache_write_tokens=2_000,
        cache_write_1h_tokens=500,
    )
    # 2000*3 + 6000*0.3 + 1500*3.75 + 500*6 + 1000*15 = 31,425 USD per million tokens
    assert cost(usage, table.lookup("claude-sonnet-4-5-20250929")) == 0.031425


def test_cost_of_an_openai_turn_with_cached_input(table: PriceTable) -> None:
    usage = Usage(input_tokens=2_000, output_tokens=500, cache_read_tokens=1_500)
    # 500*2.5 + 1500*1.25 + 500*10
    assert cost(usage, table.lookup("gpt-4o-2024-08-06")) == 0.008125
    # reasoning tokens are already inside output_tokens: not charged twice
    reasoning = Usage(input_tokens=1_000, output_tokens=4_000, reasoning_tokens=3_500)
    assert cost(reasoning, table.lookup("o3")) == 0.034  # 1000*2 + 4000*8


def test_a_million_of_each(table: PriceTable) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost(usage, table.lookup("claude-haiku-4-5")) == 6.0
    assert cost(usage, table.lookup("gpt-5-nano")) == 0.45


def test_one_hour_writes_without_their_own_price_cost_as_five_minute_writes() -> None:
    price = Price(input=2, output=4, cache_read=0.2, cache_write=2.5)
    usage = Usage(input_tokens=1_000, cache_write_tokens=1_000, cache_write_1h_tokens=400)
    assert cost(usage, price) == 0.0025


def test_cost_is_rounded_to_a_nano_dollar() -> None:
    price = Price(input=0.1, output=0.4, cache_read=0.025, cache_write=0)
    assert cost(Usage(input_tokens=3, output_tokens=7), price) == 3.1e-06  # no float noise
    assert cost(Usage(input_tokens=1), Price(0.0004, 0, 0, 0)) == 0.0


def test_unknown_cost_is_none_never_zero(table: PriceTable) -> None:
    usage = Usage(input_tokens=10, output_tokens=10)
    assert cost(usage, None) is None
    assert cost(usage, table.lookup("not-a-model")) is None
    assert cost(Usage(), table.lookup("gpt-4o")) is None  # no counts: nothing to price
    assert cost(Usage(output_tokens=0), table.lookup("gpt-4o")) == 0.0


def test_inconsistent_counts_never_go_negative(table: PriceTable) -> None:
    usage = Usage(input_tokens=None, output_tokens=100, cache_read_tokens=50)
    assert cost(usage, table.lookup("gpt-4o")) == 0.0010625  # 50*1.25 + 100*10


# ---- the user's file -----------------------------------------------------------------------


def test_override_file_wins_and_adds(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mine.json",
        {
            "models": {
                "gpt-4o": {"input": 1, "output": 2, "cache_read": 0.5, "cache_write": 0},
                "my-finetune": {
                    "provider": "openai",
                    "input": 3,
                    "output": 6,
                    "cache_read": 1,
                    "cache_write": 0,
                },
            },
            "providers": {
                "ollama": {"input": 0.01, "output": 0.02, "cache_read": 0, "cache_write": 0}
            },
        },
    )
    table = PriceTable.load(path)
    assert table.lookup("gpt-4o-2024-08-06") == Price(1, 2, 0.5, 0)
    assert table.lookup("my-finetune") == Price(3, 6, 1, 0, None, "openai")
    assert table.lookup("llama3", provider="ollama") == Price(0.01, 0.02, 0, 0)
    assert table.lookup("claude-sonnet-4-5") == Price(3, 15, 0.3, 3.75, 6, "anthropic")  # kept


def test_override_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path / "env.json",
        {"models": {"o3": {"input": 9, "output": 9, "cache_read": 9, "cache_write": 0}}},
    )
    monkeypatch.setenv(ENV_VAR, str(path))
    assert PriceTable.load().lookup("o3") == Price(9, 9, 9, 0)


def test_override_from_the_user_config_dir(no_user_prices: Path) -> None:
    write(
        no_user_prices / "prices.json",
        {"models": {"o3": {"input": 7, "output": 7, "cache_read": 7, "cache_write": 0}}},
    )
    assert PriceTable.load().lookup("o3") == Price(7, 7, 7, 0)


def test_an_argument_beats_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = write(
        tmp_path / "env.json",
        {"models": {"o3": {"input": 1, "output": 1, "cache_read": 1, "cache_write": 0}}},
    )
    arg = write(
        tmp_path / "arg.json",
        {"models": {"o3": {"input": 2, "output": 2, "cache_read": 2, "cache_write": 0}}},
    )
    monkeypatch.setenv(ENV_VAR, str(env))
    assert PriceTable.load(arg).lookup("o3") == Price(2, 2, 2, 0)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"models": []}', "'models' must be an object"),
        (b'{"models": {"x": 3}}', "models['x'] must be an object"),
        (
            b'{"models": {"x": {"input": 1, "output": 2, "cache_read": 0}}}',
            "'cache_write' must be a number",
        ),
        (
            b'{"models": {"x": {"input": "1", "output": 2, "cache_read": 0, "cache_write": 0}}}',
            "'input' must be a number",
        ),
        (
            b'{"models": {"x": {"input": -1, "output": 2, "cache_read": 0, "cache_write": 0}}}',
            "'input' must be a number >= 0",
        ),
        (
            b'{"providers": {"ollama": {"input": true, "output": 0, "cache_read": 0, "cache_write": 0}}}',
            "'input' must be a number",
        ),
    ],
)
def test_malformed_override_is_a_clear_error(
    tmp_path: Path, content: bytes, complaint: str
) -> None:
    path = tmp_path / "bad-prices.json"
    path.write_bytes(content)
    with pytest.raises(PriceFileError) as caught:
        PriceTable.load(path)
    assert str(path) in str(caught.value)
    assert complaint in str(caught.value)


def test_a_named_file_that_is_missing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere.json"
    with pytest.raises(PriceFileError, match=r"nowhere\.json"):
        PriceTable.load(missing)
    monkeypatch.setenv(ENV_VAR, str(missing))
    with pytest.raises(PriceFileError, match=r"nowhere\.json"):
        PriceTable.load()


def test_no_user_file_is_fine(no_user_prices: Path) -> None:
    assert not no_user_prices.exists()
    assert PriceTable.load().lookup("gpt-5") is not None
