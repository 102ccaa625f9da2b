"""One definition of every table and raw source: names, types, nullability, grain, meaning.

Code builds Spark schemas from these definitions and people read them here (or in
`docs/tables.md`, generated from them by `cdp docs`). A table is never inferred.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import types as T


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric field of a raw source. A value outside is quarantined as
    OUT_OF_RANGE; a NaN or infinite value of any floating-point field, range or not, as NON_FINITE."""

    minimum: float | None = None
    maximum: float | None = None
    above_minimum: bool = False             # the minimum itself is invalid (an exchange rate is positive)
    field: str | None = None                # a field of the column's structs (an order line's quantity)
    when: tuple[str, str] | None = None     # only where this column holds this value, case-insensitive
    plausible: bool = False                 # the maximum is a plausibility limit: conf can change it

    def describe(self) -> str:
        low = "" if self.minimum is None else f"{'>' if self.above_minimum else '>='} {self.minimum:g}"
        high = "" if self.maximum is None else f"<= {self.maximum:g}{' (plausible)' if self.plausible else ''}"
        where = f" where {self.when[0]} = {self.when[1]}" if self.when else ""
        return " and ".join(p for p in (low, high) if p) + where


@dataclass(frozen=True)
class Column:
    name: str
    type: str               # Spark SQL type, e.g. "string", "decimal(18,2)", "array<string>"
    nullable: bool = True
    doc: str = ""
    ranges: tuple[Range, ...] = ()          # raw sources only: see `Range`

    @property
    def data_type(self) -> T.DataType:
        # Imported on use: the DAG files read table names from here and must parse without Spark.
        from pyspark.sql import types as T

        return T._parse_datatype_string(self.type)

    @property
    def field(self) -> T.StructField:
        from pyspark.sql import types as T

        return T.StructField(self.name, self.data_type, self.nullable)


@dataclass(frozen=True)
class Table:
    name: str                               # "<database>.<table>"
    columns: tuple[Column, ...]
    doc: str
    keys: tuple[str, ...] = ()              # the grain: unique per row
    partition_by: tuple[str, ...] = ()
    properties: tuple[tuple[str, str], ...] = ()   # Delta table properties set when it is created

    @property
    def struct(self) -> T.StructType:
        from pyspark.sql import types as T

        return T.StructType([c.field for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def stats_columns(self) -> tuple[str, ...]:
        """The columns Delta keeps file statistics on: those queries prune by (the grain, customer ids,
        dates and times). Statistics on every column (free text, payloads) cost about half a write's CPU."""
        dated = {"date", "timestamp", "timestamp_ntz"}
        # Delta keeps min/max statistics on atomic types only (not arrays, maps, structs, binary, booleans).
        atomic = dated | {"string", "int", "bigint", "long", "smallint", "tinyint", "double", "float"}
        # Never personal data or keyed hashes of contact points: the transaction log keeps every file's minimum
        # and maximum for as long as the log is retained, after an erasure and its vacuum too.
        return tuple(c.name for c in self.columns if c.name not in self.partition_by
                     and (c.type in atomic or c.type.startswith("decimal"))
                     and (c.name in self.keys or c.name == "customer_id" or c.type in dated)
                     and not is_personal(c.name) and c.name not in KEYED_HASH_COLUMNS)

    @property
    def database(self) -> str:
        return self.name.split(".")[0]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name!r}")


@dataclass(frozen=True)
class RawSource:
    """The contract of one raw input: its file format and the fields it must carry."""

    name: str
    format: str                             # "csv" or "jsonl"
    columns: tuple[Column, ...]
    doc: str
    record_id: str                          # the source's own record key
    timestamp: str                          # field that dates the record
    timezone: str = "UTC"                   # zone of naive timestamps in the file
    options: dict[str, str] = field(default_factory=dict)

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if not c.nullable]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"source {self.name} has no field {name!r}")

    @property
    def struct(self) -> T.StructType:
        """Every field typed as declared, all nullable: requiredness is checked, not assumed."""
        from pyspark.sql import types as T

        return T.StructType([T.StructField(c.name, c.data_type, True) for c in self.columns])


# Columns that hold personal data in clear wherever they appear (raw sources, bronze, the quarantine's payload,
# free text): a value of one is never printed, in a gate's message or anywhere else, unmasked.
PERSONAL_COLUMNS = frozenset({
    "email", "referred_email", "phone", "street", "first_name", "last_name", "given_name", "family_name",
    "birth_date", "dob", "raw_payload", "text", "comment", "_email", "_phone", "_street",
})


# Columns holding keyed hashes of contact points (HMAC-SHA256 of an e-mail or phone, alone or in an identity-graph
# node 'email:<hash>'): not reversible, but they name a person across tables, so an erasure removes them too.
KEYED_HASH_COLUMNS = frozenset({"email_key", "phone_key", "referred_email_key", "node"})


def is_personal(column: str) -> bool:
    return column.split(".")[-1] in PERSONAL_COLUMNS


def C(name: str, type_: str, nullable: bool = True, doc: str = "", ranges: tuple[Range, ...] = ()) -> Column:
    """Shorthand used by the table modules."""
    return Column(name, type_, nullable, doc, ranges)
