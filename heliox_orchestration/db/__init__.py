"""The Heliox database. Importing the package registers every table on ``schema.metadata``."""

from heliox_orchestration.db import alert_schema as alert_schema
from heliox_orchestration.db import rollup_schema as rollup_schema
from heliox_orchestration.db import usage_store as usage_store
