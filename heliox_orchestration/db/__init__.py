"""The Heliox database. Importing the package registers every table on ``schema.metadata``."""

from heliox_orchestration.db import rollup_schema as rollup_schema
