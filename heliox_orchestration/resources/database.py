"""The Heliox database as a Dagster resource."""

from __future__ import annotations

import threading

from dagster import ConfigurableResource, InitResourceContext, get_dagster_logger
from pydantic import PrivateAttr
from sqlalchemy import Engine

from heliox_orchestration.db.engine import (
    embedded_database_url,
    ensure_schema,
    make_engine,
    mask_url,
    usage_is_empty,
)
from heliox_orchestration.ingest.demo_fleet import FleetSpec, seed_demo
from heliox_orchestration.settings import load_settings

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


class HelioxDatabase(ConfigurableResource):
    """The Heliox database (GPU usage, cost aggregates, recommendations, alert ledger).

    ``url`` comes from ``HELIOX_DATABASE_URL`` through ``EnvVar`` (it may hold a password).
    Unset, Heliox uses the embedded SQLite file under ``HELIOX_DATA_DIR`` and fills it with the
    demo fleet the first time it is empty; a database the user names is never seeded unasked.
    """

    url: str | None = None

    _engine: Engine | None = PrivateAttr(default=None)

    @property
    def is_embedded(self) -> bool:
        return not self.url

    def effective_url(self) -> str:

        if self.url:
            return self.url
        return embedded_database_url(load_settings().embedded_database_path)

    def masked_url(self) -> str:

        return mask_url(self.effective_url())

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._engine = self.get_engine()

    def get_engine(self) -> Engine:
        """A shared engine per URL, with the schema in place (and demo data when embedded)."""
        if self._engine is None:
            self._engine = self._shared_engine(self.effective_url())
        return self._engine

    def _shared_engine(self, url: str) -> Engine:

        with _engines_lock:
            engine = _engines.get(url)
            if engine is None:
                engine = make_engine(url)
                ensure_schema(engine)
                if self.is_embedded and usage_is_empty(engine):
                    # Imported here: the generator needs numpy and pandas, definitions do not.

                    settings = load_settings()
                    report = seed_demo(engine, FleetSpec(timezone=settings.timezone))
                    get_dagster_logger().info(
                        f"Embedded database was empty: seeded the demo fleet "
                        f"({report.rows:,} rows, {report.gpus} GPUs) into {mask_url(url)}"
                    )
                _engines[url] = engine
        return engine
