"""The environment deploy/dagster.yaml (and its URL variant) read their PostgreSQL storage from."""

from __future__ import annotations

from sqlalchemy.engine import make_url


def dagster_storage_env(url: str) -> dict[str, str]:
    parsed = make_url(url)
    return {
        "DAGSTER_POSTGRES_HOST": parsed.host or "127.0.0.1",
        "DAGSTER_POSTGRES_PORT": str(parsed.port or 5432),
        "DAGSTER_POSTGRES_USER": parsed.username or "postgres",
        "DAGSTER_POSTGRES_PASSWORD": parsed.password or "",
        "DAGSTER_POSTGRES_DB": str(parsed.database),
        "DAGSTER_POSTGRES_URL": parsed.set(drivername="postgresql+psycopg2").render_as_string(
            hide_password=False
        ),
    }
