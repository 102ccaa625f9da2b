"""Person evidence: which scored pairs are one person, beyond the match probability.

Fellegi-Sunter takes the attributes as independent; in a household they are not, so a parent and a
child of one name, address and phone would outweigh two unrelated birth dates. What a household
shares (family name, address, phone, e-mail) supports a match but cannot make one: the weights of what
is the person's own must add up to more than nothing, a comparison the model trusts may not disagree
outright (both known, nothing alike: its 'else' level), and a pair may not look like two members of one
household. A comparison's level is read from its weight in a scored pair, as Splink scores it.
"""

from __future__ import annotations

import dataclasses
from functools import reduce
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F

ELSE_LEVEL = -1    # a comparison's last level: both sides known and nothing alike
# The levels of the birth-date comparison that say "the same date" (after its null level): exact, and
# day and month swapped (`_birth_date_comparison`).
SAME_BIRTH_DATE_LEVELS = (1, 2)


def _splink_level(model: dict[str, Any], name: str, level: int) -> Any:
    """One of a comparison's levels (0 is its null level, `ELSE_LEVEL` its last) as Splink scores it: a level
    the training never saw has no m probability in the model, and Splink then uses its default (a list
    without a phone or an e-mail column trains none of their levels)."""
    from splink import SettingsCreator

    known = {f.name for f in dataclasses.fields(SettingsCreator)}
    splink_model = {k: v for k, v in model.items() if k in known}    # not the keys we add (`matching.TRAINED_ON`)
    splink_settings = SettingsCreator.from_path_or_dict(splink_model).get_settings(
        model.get("sql_dialect", "duckdb"))
    comparison = next(c for c in splink_settings.comparisons if c.output_column_name == name)
    return comparison.comparison_levels[level]


def level_weight(model: dict[str, Any], name: str, level: int) -> float:
    """A comparison's weight (log2 Bayes factor) at one of its levels."""
    return _splink_level(model, name, level)._log2_bayes_factor


def contradicting(model: dict[str, Any], names: tuple[str, ...], max_match_share: float) -> list[str]:
    """The comparisons of `names` whose outright disagreement the model finds in fewer than `max_match_share`
    of true matches (its 'else' level's m). Only those veto a link: where a list's duplicates often carry
    an unrelated birth date (FEBRL's corrupted dates: about 6% of matches), the disagreement is evidence
    to weigh, not proof of two people."""
    return [name for name in names if _splink_level(model, name, ELSE_LEVEL).m_probability < max_match_share]


def at_level(model: dict[str, Any], name: str, level: int) -> Column:
    """Whether a scored pair's comparison `name` is at `level`: its weight is that level's."""
    return F.abs(F.col(f"mw_{name}") - level_weight(model, name, level)) < 1e-9


def household_member(model: dict[str, Any]) -> Column:
    """Whether a scored pair looks like two members of one household rather than one person: one part of
    the name disagrees outright (both known, nothing alike) while the other agrees, and the birth dates
    are not the same. A parent and a child of one family name, or a couple of one given name, sharing
    the address, phone and e-mail, otherwise pass on everything they share. A duplicate whose given
    name is garbled beyond recognition keeps its birth date, and one whose names are swapped with a
    typo disagrees on both parts."""
    same_birth_date = reduce(lambda a, b: a | b,
                             [at_level(model, "birth_date", level) for level in SAME_BIRTH_DATE_LEVELS])
    one_name_apart = (at_level(model, "given_name", ELSE_LEVEL) & (F.col("mw_family_name") > 0)) | \
        (at_level(model, "family_name", ELSE_LEVEL) & (F.col("mw_given_name") > 0))
    return one_name_apart & ~same_birth_date


def weight_of(name: str, columns: list[str]) -> Column:
    """A comparison's part of a scored pair's match weight, its term-frequency adjustment included."""
    weight = F.col(f"mw_{name}")
    if f"mw_tf_adj_{name}" in columns:
        weight = weight + F.coalesce(F.col(f"mw_tf_adj_{name}"), F.lit(0.0))
    return weight


def one_person(model: dict[str, Any], columns: list[str], evidence: tuple[str, ...], vetoes: list[str],
               households_apart: bool) -> Column:
    """Whether a scored pair (Splink's prediction, `columns`) is one person: the weights of `evidence` add up
    to more than nothing, none of `vetoes` (`contradicting`) is at its 'else' level, and, with
    `households_apart`, the pair is not two members of one household (`household_member`)."""
    own = reduce(lambda a, b: a + b, [weight_of(name, columns) for name in evidence])
    accepted = reduce(lambda a, b: a & ~b, [at_level(model, name, ELSE_LEVEL) for name in vetoes], own > 0)
    return accepted & ~household_member(model) if households_apart else accepted
