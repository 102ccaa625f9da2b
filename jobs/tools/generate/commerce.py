"""Purchases as raw records: online orders and store (POS) transactions, and the web and app
sessions around them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.tools.generate import text
from jobs.tools.generate.landing import Records
from jobs.tools.generate.population import CATEGORIES
from jobs.tools.generate.sources import ChunkBuilder, hours

STORES = [f"S{i:03d}" for i in range(1, 13)]
EVENT_PLATFORMS = ["web", "ios", "android"]
BROWSE_EVENTS = ["page_view", "product_view", "search", "add_to_cart"]
ORDER_STATUSES = ["completed", "returned", "cancelled"]


def _joined(values: pa.StringArray, counts: np.ndarray, separator: str) -> pa.StringArray:
    """Consecutive runs of `values` (`counts` long each) joined into one text per run."""
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    return pc.binary_join(pa.ListArray.from_arrays(offsets, values), separator)


def _take(values: pa.StringArray, index: np.ndarray) -> pa.StringArray:
    """values[index], "" where the index is out of range (a browsing session has no order)."""
    inside = index < len(values)
    if not len(values):
        return text.constant("", len(index))
    return text.where(inside, values.take(pa.array(np.where(inside, index, 0))), "")


def transactions(b: ChunkBuilder) -> tuple[Records, Records]:
    """Orders (e-commerce) and POS transactions from the true purchase times and values.

    Each order value (Gamma-Gamma) is split over 1-4 lines in the person's preferred categories.
    """
    pop, rng, bought = b.pop, b.stream("transactions"), b.purchases
    person, day, m = bought.person, bought.day, len(bought.person)
    value = rng.gamma(b.spend_p, 1.0 / pop.nu[person])
    outlier = rng.random(m) < b.rates.outlier_amount
    value[outlier] *= 100
    k = rng.integers(1, 5, m)
    of = np.repeat(np.arange(m), k)                     # the purchase of each line
    preference = np.cumsum(pop.category_pref, axis=1)[person[of]]
    category = np.minimum((rng.random(len(of))[:, None] > preference).sum(axis=1), len(CATEGORIES) - 1)
    quantity = rng.integers(1, 3, len(of))
    share = rng.exponential(1.0, len(of))               # Dirichlet(1, ..., 1) shares of the value
    share *= value[of] / np.bincount(of, share, minlength=m)[of]
    unit_price = np.round(share / quantity, 2)
    sku = text.concat("SKU-", text.number(category, 2), text.number(rng.integers(0, 40, len(of)), 3))
    category_text = text.pick(CATEGORIES, category)
    in_store = rng.random(m) < pop.store_share[person]

    # Store purchases are paid in EUR at the day's rate.
    line_in_store = in_store[of]
    rate = b.eur_usd[np.minimum(day.astype(np.int64), len(b.eur_usd) - 1)]
    eur_price = np.round(unit_price / rate[of], 2)[line_in_store]
    store_lines = pa.array(line_in_store)
    items = text.concat(sku.filter(store_lines), ":", category_text.filter(store_lines), ":",
                        text.number(quantity[line_in_store]), ":", text.money(eur_price))
    store = np.flatnonzero(in_store)
    pos = Records(person[store], day[store])
    amount = np.bincount(of[line_in_store], quantity[line_in_store] * eur_price, minlength=m)[store]
    ns = len(store)
    pos.fields.update(
        transaction_id=text.new_ids(rng, "T", ns),
        store_id=text.pick(STORES, rng.integers(0, len(STORES), ns)),
        loyalty_number=text.where(rng.random(ns) < 0.8, b.loyalty.take(pa.array(pos.person)), ""),
        local_ts=b.clock.berlin_local(pos.day),
        currency=text.constant("EUR", ns),
        amount=text.money(amount),
        items=_joined(items, k[store], "|"),
    )
    pos.flag("outlier_amount", outlier[store])

    online = np.flatnonzero(~in_store)
    orders = Records(person[online], day[online])
    no, take = len(online), pa.array(orders.person)
    second = pop.second_account[orders.person] & (rng.random(no) < 0.4)
    online_lines = pa.array(~line_in_store)
    line_json = text.concat('{"sku":"', sku.filter(online_lines), '","category":"', category_text.filter(online_lines),
                            '","quantity":', text.number(quantity[~line_in_store]), ',"unit_price":',
                            text.money(unit_price[~line_in_store]), "}")
    orders.fields.update(
        order_id=text.new_ids(rng, "O", no),
        account_id=text.where(second, b.account2.take(take), b.account.take(take)),
        email=b.email_of(rng, orders),
        order_ts=b.clock.iso(orders.day),
        channel=text.where(rng.random(no) < 0.35, "app", "web"),
        currency=text.constant("USD", no),
        status=text.pick(ORDER_STATUSES, rng.choice(3, no, p=[0.92, 0.05, 0.03])),
        shipping_postcode=pop.postcode.take(take),
        lines=text.concat("[", _joined(line_json, k[online], ","), "]"),
    )
    orders.flag("outlier_amount", outlier[online])
    orders.blank_one(rng, b.rates.missing_field, ["email", "shipping_postcode"])
    return orders, pos


def events(b: ChunkBuilder, orders: Records) -> Records:
    """Sessions of web/app events; purchase sessions log in, browsing sessions may not.

    Only people with an online order have an account to log in to (it is created at the
    first checkout), so every account in the events is known to the orders as well.
    """
    pop, rng, n = b.pop, b.stream("events"), len(b.pop)
    n_orders = len(orders)
    browsing = rng.poisson(2 + 12 * pop.engagement)
    browser = np.repeat(np.arange(n), browsing)
    # Sessions: one before each online order, then the browsing ones.
    person = np.concatenate([orders.person, browser])
    start = np.concatenate([orders.day - hours(rng, 0.05, 0.5, n_orders),
                            rng.uniform(pop.first_seen[browser], b.history_days)])
    s = len(person)
    is_order = np.arange(s) < n_orders
    has_account = np.bincount(orders.person, minlength=n) > 0
    # A browsing session logs in to the account of the person's first order.
    first_order = np.zeros(n, dtype=np.int64)
    buyers, first = np.unique(orders.person, return_index=True)
    first_order[buyers] = first
    account = _take(orders.fields["account_id"], np.where(is_order, np.arange(s), first_order[person]))
    device = b.device_first[person] + rng.integers(0, b.device_count[person])
    platform = rng.integers(0, len(EVENT_PLATFORMS), s)
    hint = text.where(rng.random(s) < 0.5, text.new_ids(rng, "S", s), "")
    logs_in = is_order | (has_account[person] & (rng.random(s) < 0.3))
    login_at = np.where(logs_in, rng.integers(0, 3, s), -1)
    n_ev = rng.integers(2, 7, s)

    count = n_ev + is_order
    session = np.repeat(np.arange(s), count)
    first_event = np.concatenate([[0], np.cumsum(count)[:-1]])
    k = np.arange(len(session)) - first_event[session]
    step = hours(rng, 0.002, 0.1, len(session))
    elapsed = np.cumsum(step)
    elapsed -= (elapsed[first_event] - step[first_event])[session]
    t = start[session] + elapsed
    # The login event comes first where both fall on the same step (then no purchase is logged).
    login = k == login_at[session]
    purchase = ~login & is_order[session] & (k == n_ev[session])
    kind = np.where(login, len(BROWSE_EVENTS), np.where(purchase, len(BROWSE_EVENTS) + 1,
                                                          rng.integers(0, len(BROWSE_EVENTS), len(session))))
    with_sku = (kind == BROWSE_EVENTS.index("product_view")) | (kind == BROWSE_EVENTS.index("add_to_cart"))
    sku = text.concat("SKU-", text.number(rng.integers(0, 10, len(session)), 2),
                      text.number(rng.integers(0, 40, len(session)), 3))
    logged_in = (login_at[session] >= 0) & (k >= login_at[session])
    take = pa.array(session)
    recs = Records(person[session], t)
    recs.fields.update(
        event_id=text.new_ids(rng, "E", len(recs)),
        device_id=b.devices.take(pa.array(device[session])),
        user_id=text.where(logged_in, account.take(take), ""),
        session_hint=hint.take(take),
        event_type=text.pick([*BROWSE_EVENTS, "login", "purchase"], kind),
        event_ts=b.clock.iso(t),
        platform=text.pick(EVENT_PLATFORMS, platform[session]),
        sku=text.where(with_sku, sku, ""),
        order_id=text.where(purchase, _take(orders.fields["order_id"], session), ""),
    )
    return recs
