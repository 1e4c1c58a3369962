"""``modelyard db upgrade``: run the Alembic migrations, then load the catalog.

The catalog load is an upsert: factories and models from ``conf/llm_factories.json`` are
inserted or updated; catalog rows that left the file are removed (tenants' configured
models live in ``tenant_llm`` and are untouched).
"""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, delete, select, tuple_

from conf.catalog import load_catalog
from models.tables import llm_factories, llms


def _alembic_config(engine: Engine, connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("models") / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine) -> dict[str, int]:
    """Migrate the schema to head and load the catalog; returns counts for the CLI."""
    with engine.begin() as conn:
        command.upgrade(_alembic_config(engine, conn), "head")
    return load_catalog_into(engine)


def load_catalog_into(engine: Engine) -> dict[str, int]:
    factory_rows = []
    model_rows = []
    for f in load_catalog():
        factory_rows.append(
            {"name": f.name, "tags": list(f.tags), "base_url": f.base_url, "rank": f.rank, "internal": f.internal}
        )
        for m in f.models:
            for model_type in m.model_types:
                model_rows.append(
                    {
                        "factory": f.name,
                        "llm_name": m.name,
                        "model_type": model_type,
                        "max_tokens": m.max_tokens,
                        "is_tools": m.is_tools,
                        "tags": list(m.tags),
                        "batch_size": m.batch_size,
                        "dimensions": m.dimensions,
                    }
                )
    with engine.begin() as conn:
        existing_f = set(conn.scalars(select(llm_factories.c.name)))
        existing_m = {
            (r.factory, r.llm_name, r.model_type): r.id
            for r in conn.execute(select(llms.c.id, llms.c.factory, llms.c.llm_name, llms.c.model_type))
        }
        wanted_f = {r["name"] for r in factory_rows}
        wanted_m = {(r["factory"], r["llm_name"], r["model_type"]) for r in model_rows}
        stale_m = [k for k in existing_m if k not in wanted_m]
        if stale_m:
            conn.execute(delete(llms).where(tuple_(llms.c.factory, llms.c.llm_name, llms.c.model_type).in_(stale_m)))
        stale_f = existing_f - wanted_f
        if stale_f:
            conn.execute(delete(llm_factories).where(llm_factories.c.name.in_(stale_f)))
        for row in factory_rows:
            if row["name"] in existing_f:
                conn.execute(llm_factories.update().where(llm_factories.c.name == row["name"]).values(**row))
            else:
                conn.execute(llm_factories.insert().values(**row))
        new_models = [r for r in model_rows if (r["factory"], r["llm_name"], r["model_type"]) not in existing_m]
        if new_models:
            conn.execute(llms.insert(), new_models)
        for row in model_rows:
            key = (row["factory"], row["llm_name"], row["model_type"])
            if key in existing_m:
                conn.execute(llms.update().where(llms.c.id == existing_m[key]).values(**row))
    return {"factories": len(factory_rows), "models": len(model_rows)}
