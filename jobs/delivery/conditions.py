"""An audience's condition checked as text, before any Spark runs: one SQL expression over the audience view.

`check_condition` parses the condition with sqlglot (Spark dialect) and refuses what is not a single
expression (`;`, a statement, DDL), any subquery (a condition reads the view's row, never another
table), functions that reach outside the query engine, and columns the view does not have. It runs
when the configuration is loaded, so a typo fails `cdp` at once, naming the audience and the column.
Types (a string compared with a number, a condition that is not true/false) need the view's schema in
Spark's analyzer: `jobs.delivery.audience.check_conditions`, at the start of the export stage and of
every `cdp audience` command.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from schemas.audience import AUDIENCE_VIEW

# Spark SQL functions that call Java methods by name: never in a condition.
FORBIDDEN_FUNCTIONS = frozenset({"reflect", "java_method", "try_reflect"})


class ConditionError(ValueError):
    """An audience's condition is not one boolean expression over the audience view."""


def check_condition(audience: str, condition: str) -> None:
    """Raise ConditionError naming `audience` when `condition` is not a single expression over the view's
    columns (see the module's docstring)."""
    try:
        parsed = [p for p in sqlglot.parse(condition, read="spark") if p is not None]
    except sqlglot.errors.ParseError as exc:
        raise ConditionError(f"audience {audience!r}: the condition does not parse: {exc}") from None
    if len(parsed) != 1:
        raise ConditionError(f"audience {audience!r}: the condition must be one expression (no ';'), "
                             f"got {len(parsed)} statements")
    (tree,) = parsed
    if not isinstance(tree, exp.Condition):
        raise ConditionError(f"audience {audience!r}: the condition must be an expression, not a "
                             f"{type(tree).__name__.upper()} statement")
    if tree.find(exp.Query) is not None:
        raise ConditionError(f"audience {audience!r}: subqueries are not allowed in a condition (it reads one "
                             "row of the audience view)")
    for function in tree.find_all(exp.Anonymous):
        if function.name.lower() in FORBIDDEN_FUNCTIONS:
            raise ConditionError(f"audience {audience!r}: function {function.name} is not allowed in a condition")
    known = set(AUDIENCE_VIEW.column_names)
    for column in tree.find_all(exp.Column):
        # `a.b` is field b of column a in Spark; sqlglot reads it as column b of table a.
        name = column.parts[0].name
        if name not in known:
            raise ConditionError(f"audience {audience!r}: unknown column {name!r} in the condition; the audience "
                                 f"view has {', '.join(AUDIENCE_VIEW.column_names)}")
