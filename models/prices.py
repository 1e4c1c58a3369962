"""Prices: USD per token for a model -- an operator's override (``model_prices``) if there is
one, else the catalog's published price (``conf/prices.json``), else none.

The ledger stores each call's cost as computed when the call was recorded, so a price change
applies to calls from then on and never rewrites history.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from conf.catalog import catalog_prices, split_model_name
from conf.errors import InvalidRequest, NotFound
from models.dml import rowcount
from models.jobs import utcnow
from models.tables import model_prices
from providers.base import Usage


@dataclass(frozen=True)
class Price:
    input_cost_per_token: float
    output_cost_per_token: float = 0.0
    input_cost_per_token_batches: float | None = None
    output_cost_per_token_batches: float | None = None

    def cost(self, usage: Usage) -> float:
        """Prompt tokens at the input price, completion tokens at the output price; a total
        reported without the split (or above it) is billed at the input price."""
        completion = max(0, usage.completion_tokens)
        prompt = max(usage.prompt_tokens, usage.total_tokens - completion, 0)
        return prompt * self.input_cost_per_token + completion * self.output_cost_per_token

    def estimate(self, tokens: int) -> float:
        """A bound for a call not yet made: every token at the dearer of the two prices."""
        return tokens * max(self.input_cost_per_token, self.output_cost_per_token)


def price_of(session: Session, model: str) -> tuple[Price | None, str]:
    """The model's price and where it comes from (``override``, ``catalog`` or ``none``)."""
    row = session.execute(select(model_prices).where(model_prices.c.model == model)).first()
    if row is not None:
        return Price(
            row.input_cost_per_token,
            row.output_cost_per_token,
            row.input_cost_per_token_batches,
            row.output_cost_per_token_batches,
        ), "override"
    published = catalog_prices().get(model)
    if published is not None:
        return Price(
            published["input_cost_per_token"],
            published.get("output_cost_per_token") or 0.0,
            published.get("input_cost_per_token_batches"),
            published.get("output_cost_per_token_batches"),
        ), "catalog"
    return None, "none"


def set_price(
    session: Session,
    model: str,
    *,
    input_cost: float,
    output_cost: float = 0.0,
    batch_input_cost: float | None = None,
    batch_output_cost: float | None = None,
) -> None:
    """Override a model's price (USD per token) for calls from now on."""
    try:
        split_model_name(model)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    for name, value in (
        ("input", input_cost),
        ("output", output_cost),
        ("batch input", batch_input_cost),
        ("batch output", batch_output_cost),
    ):
        if value is not None and not 0 <= value < 1:
            raise InvalidRequest(f"the {name} price must be USD per token, at least 0 and below 1; got {value}")
    values = {
        "input_cost_per_token": input_cost,
        "output_cost_per_token": output_cost,
        "input_cost_per_token_batches": batch_input_cost,
        "output_cost_per_token_batches": batch_output_cost,
        "updated_at": utcnow(),
    }
    if rowcount(session, model_prices.update().where(model_prices.c.model == model).values(**values)) == 0:
        session.execute(model_prices.insert().values(model=model, **values))


def clear_price(session: Session, model: str) -> None:
    """Drop an operator's price: the catalog's applies again."""
    if rowcount(session, delete(model_prices).where(model_prices.c.model == model)) == 0:
        raise NotFound(f"no price override for {model}")


def describe_price(session: Session, model: str) -> dict[str, Any]:
    price, source = price_of(session, model)
    return {"model": model, "source": source, **(asdict(price) if price else {})}
