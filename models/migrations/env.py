"""Alembic environment: the URL and connection come from models.migrate (never from an ini file)."""

from alembic import context

from models.tables import metadata

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `modelyard db upgrade`")
run_migrations_online()
