"""Data-quality rules: each rule is a SQL condition on a table's rows, counted in one aggregate
query over a scope and illustrated by a few example rows.

The rules on ``gpu_usage_hourly`` are the gate of every number Heliox sends: each cost asset
evaluates them over exactly the rows it is about to read, before any query computes with those
rows (so a NaN, an infinity or a text value is reported, never summed or cast), and
``heliox preview`` evaluates the same rules over the same rows. The rules know the database: SQLite
stores whatever it is given (text in a numeric column, Infinity, an hour in another text form),
PostgreSQL's NUMERIC accepts 'NaN'. New databases refuse most of this themselves (the CHECK
constraints of ``db/schema.py``); tables created before those constraints are never altered, and
the rules still catch their rows.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    String,
    Table,
    case,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.types import NullType

from heliox_orchestration.costs.common import as_int
from heliox_orchestration.db.schema import (
    SQLITE_HOUR_GLOB,
    daily_gpu_cost_days,
    daily_gpu_costs,
    gpu_usage_hourly,
)
from heliox_orchestration.money import format_usd
from heliox_orchestration.reports import WithheldResource

SAMPLE_ROWS = 5
EXAMPLES_IN_A_LINE = 3
USAGE_SAMPLE_COLUMNS = (
    "resource_id",
    "usage_hour",
    "provider",
    "gpu_type",
    "gpu_count",
    "cost_usd",
    "gpu_utilization_pct",
)
_SQLITE_HOUR_TEXT = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}):00\.000000")


@dataclass(frozen=True)
class Rule:
    name: str  # "negative cost_usd": what the operator reads, "1 row with <name>"
    condition: ColumnElement[bool]
    fix: str = ""  # what to do about such a row
    shows: tuple[str, ...] = ()  # the columns an example row needs to show the problem


def blank(*columns: ColumnElement[Any]) -> ColumnElement[bool]:
    """NULL, empty or only spaces. The LIKE goes first: TRIM on every row of a day costs more
    than the whole rest of the rules on PostgreSQL, and only a value starting with a space can
    trim to nothing."""
    return or_(*(or_(c.is_(None), c == "", c.like(" %") & (func.trim(c) == "")) for c in columns))


def _not_a_number(column: ColumnElement[Any], dialect: str) -> ColumnElement[bool]:
    """A value that is there (not NULL) and is no number: text on SQLite, NaN on PostgreSQL."""
    if dialect == "sqlite":
        return func.typeof(column).not_in(("integer", "real", "null"))
    if dialect == "postgresql":
        return column == literal_column("'NaN'::numeric")  # NaN = NaN is true in PostgreSQL
    return false()


def _not_an_hour(column: ColumnElement[Any], dialect: str) -> ColumnElement[bool]:
    if dialect == "sqlite":
        text = type_coerce(column, String())
        not_glob = text.op("NOT GLOB", is_comparison=True)(literal(SQLITE_HOUR_GLOB, String()))
        return or_(func.typeof(column) != "text", not_glob)
    if dialect == "postgresql":
        # date_bin on a timestamptz does not depend on the session's time zone (date_trunc does).
        origin: ColumnElement[Any] = literal_column("TIMESTAMPTZ '2000-01-01 00:00:00+00'")
        return func.date_bin(literal_column("INTERVAL '1 hour'"), column, origin) != column
    return false()


def usage_rules(dialect: str, max_hourly_cost: Decimal, now: dt.datetime | None = None) -> list[Rule]:
    """The rules every usage row a cost asset reads must pass; ``max_hourly_cost`` is
    ``HELIOX_MAX_HOURLY_COST_USD`` (a cost above it is a unit or currency error, not usage);
    ``now``: also no hour after now.

    A row is reported under the first rule it breaks, so the rules can stay plain comparisons:
    NaN (PostgreSQL) and text (SQLite) also sort above every number, but are reported as "not a
    number" first."""
    u = gpu_usage_hourly.c
    cost, util, count = u.cost_usd, u.gpu_utilization_pct, u.gpu_count
    not_whole = func.typeof(count) != "integer" if dialect == "sqlite" else false()
    percent_fix = "store utilization as a percent 0-100, or NULL when unknown"
    rules = [
        Rule(
            "cost_usd not a number",
            _not_a_number(cost, dialect),
            "store the hour's cost as a number (NaN or text is no cost)",
            ("cost_usd",),
        ),
        Rule(
            "negative cost_usd",
            cost < 0,
            "a credit or refund is not usage: delete the row or net it into the hour's cost",
            ("cost_usd",),
        ),
        Rule(
            f"cost_usd above {format_usd(max_hourly_cost)} an hour",
            cost > max_hourly_cost,
            "an infinite or implausible cost: check the row's units and currency (HELIOX_MAX_HOURLY_COST_USD "
            "sets the limit)",
            ("cost_usd", "gpu_count"),
        ),
        Rule(
            "gpu_utilization_pct not a number",
            _not_a_number(util, dialect),
            percent_fix,
            ("gpu_utilization_pct",),
        ),
        Rule(
            "gpu_utilization_pct outside 0-100",
            or_(util < 0, util > 100),
            percent_fix,
            ("gpu_utilization_pct",),
        ),
        Rule(
            "gpu_count not a whole number of at least 1",
            or_(not_whole, count < 1),
            "store the number of GPUs of the resource",
            ("gpu_count",),
        ),
        Rule(
            "usage_hour not the start of a UTC hour",
            _not_an_hour(u.usage_hour, dialect),
            "store usage_hour as the UTC start of its hour (on SQLite the text "
            "'YYYY-MM-DD HH:00:00.000000'), and delete the row if that hour is already stored so",
            ("cost_usd",),
        ),
        Rule(
            "NULL or blank key (resource_id, provider, gpu_type)",
            blank(u.resource_id, u.provider, u.gpu_type),
            "fill in resource_id, provider and gpu_type",
            ("provider", "gpu_type"),
        ),
    ]
    if now is not None:
        rules.append(
            Rule(
                "usage_hour later than now",
                u.usage_hour > now,
                "usage_hour must be the UTC start of an hour that has begun (usually local time "
                "stored as UTC): fix the importer's time zone and re-import",
                ("cost_usd",),
            )
        )
    return rules


def daily_cost_rules() -> list[Rule]:
    c = daily_gpu_costs.c
    return [
        Rule("negative cost_usd", c.cost_usd < 0),
        Rule(
            "avg_utilization_pct outside 0-100", or_(c.avg_utilization_pct < 0, c.avg_utilization_pct > 100)
        ),
        Rule("NULL or blank key (provider, gpu_type)", blank(c.provider, c.gpu_type)),
    ]


@dataclass(frozen=True)
class RuleReport:
    rows_checked: int
    violations: Mapping[str, int]
    samples: Sequence[Mapping[str, Any]] = ()  # a few breaking rows, with the rules they break
    examples: Sequence[str] = ()  # the same rows, one short line each
    fixes: Mapping[str, str] = field(default_factory=dict)  # broken rule -> what to do

    @property
    def passed(self) -> bool:
        return not any(self.violations.values())

    @property
    def broken_rules(self) -> list[str]:
        return [rule for rule, n in self.violations.items() if n]

    def summary(self) -> str:
        return ", ".join(
            f"{n:,} row{'s' if n != 1 else ''} with {rule}" for rule, n in self.violations.items() if n
        )

    def refusal(self, what: str, scope: str, remedy: str) -> str:
        """One line: what was refused, which rows break which rule, and what to do."""
        examples = "; ".join(self.examples[:EXAMPLES_IN_A_LINE])
        return f"{what}: {self.summary()} in {scope}, e.g. {examples}. {remedy}"

    def fix_in(self, table: str, then: str) -> str:
        """What to do: fix the rows in ``table`` (each broken rule's advice), then ``then``."""
        fixes = "; ".join(dict.fromkeys(self.fixes.values()))
        return f"Fix them in {table}{f' ({fixes})' if fixes else ''}, then {then}."


def cell_text(value: Any) -> str:
    """A stored value as an operator reads it: instants in UTC, text quoted, NULL as NULL."""
    if value is None:
        return "NULL"
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return f"{aware.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"
    if isinstance(value, str):
        canonical = _SQLITE_HOUR_TEXT.fullmatch(value)
        return f"{canonical.group(1)} UTC" if canonical else repr(value)
    if isinstance(value, Decimal) and value.is_finite():
        return format(value.normalize(), "f")  # -12.29 on PostgreSQL as on SQLite, not -12.290000
    return str(value)


def _raw(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The stored value as the driver returns it: no type processing that could raise on it."""
    return type_coerce(column, NullType()).label(column.key)


def first_broken(rules: Sequence[Rule]) -> ColumnElement[int]:
    """The index of the first rule a row breaks (NULL: none): each row counts under one rule."""
    return case(*((r.condition, i) for i, r in enumerate(rules)))


def rule_counts_query(table: Table, rules: Sequence[Rule], scope: ColumnElement[bool]) -> Select[Any]:
    """The rows in ``scope`` and how many break a rule: one aggregate scan, one aggregate, so
    that validating a day costs about what reading it does (docs/performance.md)."""
    broken = func.coalesce(func.sum(case((or_(*(r.condition for r in rules)), 1), else_=0)), 0)
    return select(func.count(), broken).select_from(table).where(scope)


def evaluate_rules(
    engine: Engine,
    table: Table,
    rules: Sequence[Rule],
    scope: ColumnElement[bool],
    sample_columns: Sequence[str],
    order_by: Sequence[str],
) -> RuleReport:
    """Count the rows in ``scope`` breaking a rule (one scan); only when some do, count them per
    rule and fetch a few examples. The first two sample columns identify a row in the examples."""
    violations = dict.fromkeys((r.name for r in rules), 0)
    with engine.connect() as conn:
        checked, broken = conn.execute(rule_counts_query(table, rules, scope)).one()
        if not as_int(broken):
            return RuleReport(as_int(checked), violations)
        which = first_broken(rules).label("rule_index")
        bad = or_(*(r.condition for r in rules))
        for index, n in conn.execute(select(which, func.count()).where(scope, bad).group_by(which)):
            violations[rules[index].name] = as_int(n)
        rows = conn.execute(
            select(*(_raw(table.c[name]) for name in sample_columns), which)
            .where(scope, bad)
            .order_by(*(table.c[name] for name in order_by))
            .limit(SAMPLE_ROWS)
        ).mappings()
        samples, examples = [], []
        for r in rows:
            rule = rules[r["rule_index"]]
            samples.append({**{name: r[name] for name in sample_columns}, "problem": rule.name})
            examples.append(_example(r, sample_columns, rule))
    fixes = {r.name: r.fix for r in rules if violations[r.name] and r.fix}
    return RuleReport(as_int(checked), violations, samples, examples, fixes)


def _example(row: Mapping[Any, Any], sample_columns: Sequence[str], rule: Rule) -> str:
    first, second, *rest = sample_columns
    # A rule that names its columns shows those; the output tables' rules show the whole row.
    shown = [c for c in rest if c in rule.shows] if rule.shows else rest
    values = ", ".join(f"{c}={cell_text(row[c])}" for c in shown)
    head = f"{cell_text(row[first])} at {cell_text(row[second])}"
    return f"{head}{': ' + values if values else ''} ({rule.name})"


def days_text(first: dt.date, last: dt.date, timezone: str) -> str:
    """The scope of a check over local days, as the operator reads it."""
    span = first.isoformat() if first == last else f"{first} to {last}"
    return f"the local days {span} ({timezone})"


def usage_scope(start: dt.datetime, end: dt.datetime) -> ColumnElement[bool]:
    """The usage rows of [start, end): the very condition the cost queries read them by."""
    u = gpu_usage_hourly.c
    return (u.usage_hour >= start) & (u.usage_hour < end)


def usage_rule_query(
    dialect: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    max_hourly_cost: Decimal,
    now: dt.datetime | None = None,
) -> Select[Any]:
    """The scan of ``usage_rule_report`` (the benchmark times it as part of the bare SQL)."""
    rules = usage_rules(dialect, max_hourly_cost, now)
    return rule_counts_query(gpu_usage_hourly, rules, usage_scope(start, end))


def usage_rule_report(
    engine: Engine,
    start: dt.datetime,
    end: dt.datetime,
    *,
    max_hourly_cost: Decimal,
    now: dt.datetime | None = None,
) -> RuleReport:
    return evaluate_rules(
        engine,
        gpu_usage_hourly,
        usage_rules(engine.dialect.name, max_hourly_cost, now),
        usage_scope(start, end),
        USAGE_SAMPLE_COLUMNS,
        ["usage_hour", "resource_id"],
    )


def withheld_resources(
    engine: Engine,
    start: dt.datetime,
    end: dt.datetime,
    *,
    max_hourly_cost: Decimal,
    now: dt.datetime | None = None,
) -> tuple[WithheldResource, ...]:
    """Each resource with usage rows in [start, end) that break a rule: how many, and which
    rules. Only worth the query when ``usage_rule_report`` of the same range did not pass."""
    u = gpu_usage_hourly.c
    rules = usage_rules(engine.dialect.name, max_hourly_cost, now)
    which = first_broken(rules).label("rule_index")
    query = (
        select(u.resource_id, which, func.count())
        .where(usage_scope(start, end), or_(*(r.condition for r in rules)))
        .group_by(u.resource_id, which)
    )
    found: dict[str, dict[int, int]] = {}
    with engine.connect() as conn:
        for resource_id, index, n in conn.execute(query):
            found.setdefault(resource_id, {})[index] = as_int(n)
    return tuple(
        WithheldResource(resource_id, sum(by_rule.values()), tuple(rules[i].name for i in sorted(by_rule)))
        for resource_id, by_rule in sorted(found.items())
    )


def bad_resources_query(
    start: dt.datetime,
    end: dt.datetime,
    dialect: str,
    *,
    max_hourly_cost: Decimal,
    now: dt.datetime | None = None,
) -> Select[tuple[str]]:
    """The resource_ids of ``withheld_resources``, as a subquery to leave them out of a query."""
    u = gpu_usage_hourly.c
    rules = usage_rules(dialect, max_hourly_cost, now)
    return select(u.resource_id).where(usage_scope(start, end), or_(*(r.condition for r in rules)))


def future_usage_report(engine: Engine, now: dt.datetime) -> RuleReport:
    """Rows whose hour has not started yet, anywhere in the table (an index range). Each blocks
    only the day it lies in; a day after today is in no alert's numbers."""
    u = gpu_usage_hourly.c
    future = u.usage_hour > now
    return evaluate_rules(
        engine,
        gpu_usage_hourly,
        [Rule("usage_hour later than now", future)],
        future,
        USAGE_SAMPLE_COLUMNS,
        ["usage_hour", "resource_id"],
    )


def daily_cost_rule_report(engine: Engine, first: dt.date, last: dt.date) -> RuleReport:
    c = daily_gpu_costs.c
    return evaluate_rules(
        engine,
        daily_gpu_costs,
        daily_cost_rules(),
        c.day.between(first, last),
        ["day", "provider", "gpu_type", "model_name", "cost_usd", "avg_utilization_pct"],
        ["day", "provider", "gpu_type"],
    )


def gap_days(engine: Engine, first: dt.date, last: dt.date, now: dt.datetime) -> list[dt.date]:
    """Materialized days that have ended and had no usage rows at all (a day still in progress
    is not judged)."""
    d = daily_gpu_cost_days.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(d.day)
                .where(d.day.between(first, last), d.has_data.is_(False), d.end_utc <= now)
                .order_by(d.day)
            ).scalars()
        )
