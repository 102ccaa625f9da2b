"""Turn one chunk of the latent population into raw records of every channel, with dirt.

A record is a dict of the source's fields (as text, the way they will be written) plus
metadata under keys starting with '_': `_person` (the true person), `_day` (days from the
start of history when it happened), `_defects` (dirt applied, for the ground truth).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from jobs.platform.settings import DirtConfig
from jobs.tools.generate import dirt
from jobs.tools.generate.population import CATEGORIES, CITIES, Population

Record = dict[str, Any]
BERLIN = ZoneInfo("Europe/Berlin")
STORES = [f"S{i:03d}" for i in range(1, 13)]
EVENT_PLATFORMS = ["web", "ios", "android"]
TICKET_CATEGORIES = ["delivery", "refund", "product", "account", "billing"]
TICKET_TEXT = {
    "delivery": ["My parcel has not arrived yet, can you check?",
                 "Delivery was late and the box was damaged."],
    "refund": ["I returned the item two weeks ago and still have no refund.", "Please refund my cancelled order."],
    "product": ["The product stopped working after a week, very disappointed.",
                "Great product but the size runs small."],
    "account": ["I cannot log in to my account.", "Please update my e-mail address."],
    "billing": ["I was charged twice for one order!", "The invoice shows the wrong address."],
}
COMMENTS_GOOD = ["Love the quality, will buy again", "Fast delivery and friendly staff", "Excellent service, thank you"]
COMMENTS_MID = ["It was okay", "Average experience", "Fine, nothing special"]
COMMENTS_BAD = ["Terrible support, never again", "Product broke quickly, very disappointed",
                "Slow delivery and rude staff"]
# People with a Chinese family name write their feedback in Chinese: the same templates, in the same
# positions, so the random stream (and every other record) is the one an English-only sample draws.
CHINESE_FAMILY_NAMES = {"Wang", "Li", "Zhang", "Chen"}
TICKET_TEXT_ZH = {
    "delivery": ["我的包裹还没有到，能帮我查一下吗？", "快递太慢了，箱子还被压坏了。"],
    "refund": ["两周前就退货了，到现在还没有退款。", "请帮我取消订单并退款。"],
    "product": ["产品用了一周就坏了，非常失望。", "产品很好，但是尺码偏小。"],
    "account": ["我登录不了我的账户。", "请帮我更新邮箱地址。"],
    "billing": ["一个订单被扣了两次钱！", "发票上的地址是错的。"],
}
COMMENTS_GOOD_ZH = ["质量很好，还会再买", "发货很快，店员很友好", "服务非常好，谢谢"]
COMMENTS_MID_ZH = ["还可以吧", "一般般", "还行，没什么特别的"]
COMMENTS_BAD_ZH = ["客服太差了，再也不买了", "产品很快就坏了，非常失望", "物流太慢，店员态度很差"]
# A duplicate contact is opened at a till or in the app by someone who does not find (or
# give) their first record: shares of such records that leave each identifier out.
DUPLICATE_CHANNELS = ["store", "app", "web"]
DUPLICATE_EMAIL_BLANK = 0.5
DUPLICATE_PHONE_BLANK = 0.6
DUPLICATE_BIRTH_DATE_BLANK = 0.1


class Clock:
    """Maps days since the start of history to timestamps."""

    def __init__(self, start: datetime):
        self.start = start

    def utc(self, day: float) -> datetime:
        return self.start + timedelta(days=float(day))

    def iso(self, day: float) -> str:
        return self.utc(day).strftime("%Y-%m-%dT%H:%M:%SZ")

    def berlin_local(self, day: float) -> str:
        return self.utc(day).astimezone(BERLIN).strftime("%Y-%m-%d %H:%M:%S")

    def date(self, day: float) -> str:
        return self.utc(day).strftime("%Y-%m-%d")


def new_id(rng: np.random.Generator, prefix: str) -> str:
    return f"{prefix}-{uuid.UUID(bytes=rng.bytes(16), version=4).hex[:20]}"


def _rec(person: str, day: float, **fields: Any) -> Record:
    return {"_person": person, "_day": day, "_defects": [], **fields}


class ChunkBuilder:
    """Builds every source's records for one chunk; all randomness comes from `rng`."""

    def __init__(self, rng: np.random.Generator, pop: Population, purchases: list[np.ndarray],
                 history_days: int, clock: Clock, dirt_rates: DirtConfig, eur_usd: np.ndarray,
                 spend_p: float):
        self.rng, self.pop, self.purchases, self.spend_p = rng, pop, purchases, spend_p
        self.history_days, self.clock, self.rates, self.eur_usd = history_days, clock, dirt_rates, eur_usd
        n = len(pop.person_id)
        self.account = np.array([new_id(rng, "A") for _ in range(n)], dtype=object)
        self.account2 = np.array([new_id(rng, "A") for _ in range(n)], dtype=object)
        self.loyalty = np.array(
            [f"L{rng.integers(10**8, 10**9)}" if has else "" for has in pop.has_loyalty], dtype=object)
        self.devices = [[new_id(rng, "D") for _ in range(int(rng.integers(1, 4)))] for _ in range(n)]

    # -- dirt helpers -------------------------------------------------------------------------
    def _chance(self, kind: str) -> bool:
        return bool(self.rng.random() < getattr(self.rates, kind))

    def email_of(self, i: int, rec: Record) -> str:
        return self.messy_email(self.pop.email[i], rec)

    def messy_email(self, email: str, rec: Record) -> str:
        if self._chance("email_case_whitespace"):
            rec["_defects"].append("email_case_whitespace")
            return dirt.messy_email(self.rng, email)
        return email

    def phone_of(self, i: int, rec: Record) -> str:
        vary = self._chance("phone_format_variation")
        if vary:
            rec["_defects"].append("phone_format_variation")
        return dirt.format_phone(self.rng, self.pop.phone_digits[i], vary)

    def name_of(self, name: str, rec: Record) -> str:
        if self._chance("name_typo"):
            rec["_defects"].append("name_typo")
            return dirt.typo(self.rng, name)
        return name

    def birth_date_of(self, i: int, rec: Record) -> str:
        """The birth date as keyed in again: sometimes left out, sometimes day and month swapped."""
        born = str(self.pop.birth_date[i])
        if self.rng.random() < DUPLICATE_BIRTH_DATE_BLANK:
            return ""
        swapped = dirt.swap_day_month(born)
        if swapped is not None and self._chance("dob_swapped"):
            rec["_defects"].append("dob_swapped")
            return swapped
        return born

    def blank_one(self, rec: Record, optional: list[str]) -> None:
        if self._chance("missing_field"):
            field = optional[int(self.rng.integers(0, len(optional)))]
            rec[field] = ""
            rec["_defects"].append(f"missing_field:{field}")

    def writes_chinese(self, i: int) -> bool:
        return self.pop.family_name[i] in CHINESE_FAMILY_NAMES

    def hours(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi)) / 24.0

    # -- sources ------------------------------------------------------------------------------
    def contacts(self) -> list[Record]:
        pop, out = self.pop, []
        for i in range(len(pop.person_id)):
            versions = [(pop.street[i], pop.city_index[i], pop.postcode[i], pop.first_seen[i])]
            if pop.moved[i]:
                moved_day = float(self.rng.uniform(pop.first_seen[i], self.history_days))
                versions.append((pop.new_street[i], pop.new_city_index[i], pop.new_postcode[i], moved_day))
            for k, (street, city, postcode, day) in enumerate(versions):
                rec = _rec(pop.person_id[i], day, contact_id=new_id(self.rng, "C"))
                if k == 1:
                    rec["_defects"].append("moved_address")
                rec.update(
                    first_name=self.name_of(pop.given_name[i], rec),
                    last_name=self.name_of(pop.family_name[i], rec),
                    email=self.email_of(i, rec),
                    phone=self.phone_of(i, rec),
                    street=street, city=CITIES[city][0], postcode=postcode, country="US",
                    birth_date=str(pop.birth_date[i]), gender=pop.gender[i], loyalty_number=self.loyalty[i],
                    signup_channel=pop.signup_channel[i],
                    email_opt_in=str(bool(pop.email_opt_in[i])).lower(),
                    sms_opt_in=str(bool(pop.sms_opt_in[i])).lower(),
                    created_at=self.clock.iso(pop.first_seen[i]), updated_at=self.clock.iso(day),
                )
                self.blank_one(rec, ["phone", "email", "birth_date", "postcode", "street"])
                out.append(rec)
            # Test accounts get none: a second mailbox would escape the test-account patterns.
            if not pop.is_test[i] and self._chance("duplicate_contact"):
                out.append(self.duplicate_contact(i, after=versions[-1][3]))
        return out

    def duplicate_contact(self, i: int, after: float) -> Record:
        """A second CRM record of person i, opened later from another channel: new contact id,
        the current address, no loyalty number, and identifiers that are missing or different
        (a second mailbox), so only a probabilistic match can tie it to the first record.

        It is opened after the person's last move (`after`), so the current address is the one
        they would give. The identifier blanks are the point of the record, so `blank_one`'s
        random missing field is not applied on top.
        """
        pop = self.pop
        day = float(self.rng.uniform(after, self.history_days))
        if pop.moved[i]:
            street, city, postcode = pop.new_street[i], pop.new_city_index[i], pop.new_postcode[i]
        else:
            street, city, postcode = pop.street[i], pop.city_index[i], pop.postcode[i]
        channels = [c for c in DUPLICATE_CHANNELS if c != pop.signup_channel[i]]
        rec = _rec(pop.person_id[i], day, contact_id=new_id(self.rng, "C"))
        rec["_defects"].append("duplicate_contact")
        rec.update(
            first_name=self.name_of(pop.given_name[i], rec),
            last_name=self.name_of(pop.family_name[i], rec),
            email="" if self.rng.random() < DUPLICATE_EMAIL_BLANK else self.messy_email(pop.second_email[i], rec),
            phone="" if self.rng.random() < DUPLICATE_PHONE_BLANK else self.phone_of(i, rec),
            street=street, city=CITIES[city][0], postcode=postcode, country="US",
            birth_date=self.birth_date_of(i, rec), gender=pop.gender[i], loyalty_number="",
            signup_channel=channels[int(self.rng.integers(0, len(channels)))],
            email_opt_in=str(bool(pop.email_opt_in[i])).lower(),
            sms_opt_in=str(bool(pop.sms_opt_in[i])).lower(),
            created_at=self.clock.iso(day), updated_at=self.clock.iso(day),
        )
        return rec

    def _basket(self, i: int, value: float) -> list[tuple[str, str, int, float]]:
        """Split an order value over 1-4 lines in the person's preferred categories."""
        k = int(self.rng.integers(1, 5))
        cats = self.rng.choice(len(CATEGORIES), k, p=self.pop.category_pref[i])
        qty = self.rng.integers(1, 3, k)
        share = self.rng.dirichlet(np.ones(k)) * value
        return [(f"SKU-{c:02d}{int(self.rng.integers(0, 40)):03d}", CATEGORIES[c], int(q), round(float(s / q), 2))
                for c, q, s in zip(cats, qty, share)]

    def transactions(self) -> tuple[list[Record], list[Record]]:
        """Orders (e-commerce) and POS transactions from the true purchase times and values."""
        pop, orders, pos = self.pop, [], []
        for i, times in enumerate(self.purchases):
            for t in times:
                value = float(self.rng.gamma(self.spend_p, 1.0 / pop.nu[i]))
                is_outlier = self._chance("outlier_amount")
                if is_outlier:
                    value *= 100
                basket = self._basket(i, value)
                if self.rng.random() < pop.store_share[i]:
                    rate = self.eur_usd[min(int(t), len(self.eur_usd) - 1)]
                    eur_lines = [(s, c, q, round(p / rate, 2)) for s, c, q, p in basket]
                    rec = _rec(pop.person_id[i], t, transaction_id=new_id(self.rng, "T"),
                               store_id=STORES[int(self.rng.integers(0, len(STORES)))],
                               loyalty_number=self.loyalty[i] if self.rng.random() < 0.8 else "",
                               local_ts=self.clock.berlin_local(t), currency="EUR",
                               amount=f"{sum(q * p for _, _, q, p in eur_lines):.2f}",
                               items="|".join(f"{s}:{c}:{q}:{p:.2f}" for s, c, q, p in eur_lines))
                    pos.append(rec)
                else:
                    account = self.account2[i] if pop.second_account[i] and self.rng.random() < 0.4 else self.account[i]
                    status = self.rng.choice(["completed", "returned", "cancelled"], p=[0.92, 0.05, 0.03])
                    rec = _rec(pop.person_id[i], t, order_id=new_id(self.rng, "O"), account_id=account)
                    rec.update(email=self.email_of(i, rec), order_ts=self.clock.iso(t),
                               channel="app" if self.rng.random() < 0.35 else "web", currency="USD",
                               status=str(status), shipping_postcode=pop.postcode[i],
                               lines=[{"sku": s, "category": c, "quantity": q, "unit_price": p}
                                      for s, c, q, p in basket])
                    self.blank_one(rec, ["email", "shipping_postcode"])
                    orders.append(rec)
                if is_outlier:
                    rec["_defects"].append("outlier_amount")
        return orders, pos

    def events(self, orders: list[Record]) -> list[Record]:
        """Sessions of web/app events; purchase sessions log in, browsing sessions may not.

        Only people with an online order have an account to log in to (it is created at the
        first checkout), so every account in the events is known to the orders as well.
        """
        pop, out = self.pop, []
        orders_by_person: dict[str, list[Record]] = {}
        for o in orders:
            orders_by_person.setdefault(o["_person"], []).append(o)
        for i in range(len(pop.person_id)):
            person = pop.person_id[i]
            sessions = [(o["_day"] - self.hours(0.05, 0.5), o) for o in orders_by_person.get(person, [])]
            end = self.history_days
            n_browse = int(self.rng.poisson(2 + 12 * pop.engagement[i]))
            sessions += [(float(self.rng.uniform(pop.first_seen[i], end)), None) for _ in range(n_browse)]
            for start, order in sessions:
                device = self.devices[i][int(self.rng.integers(0, len(self.devices[i])))]
                platform = EVENT_PLATFORMS[int(self.rng.integers(0, 3))]
                hint = new_id(self.rng, "S") if self.rng.random() < 0.5 else ""
                has_account = person in orders_by_person
                logs_in = order is not None or (has_account and self.rng.random() < 0.3)
                login_at = int(self.rng.integers(0, 3)) if logs_in else None
                n_ev = int(self.rng.integers(2, 7))
                t = start
                for k in range(n_ev + (1 if order else 0)):
                    t += self.hours(0.002, 0.1)
                    if login_at is not None and k == login_at:
                        etype = "login"
                    elif order is not None and k == n_ev:
                        etype = "purchase"
                    else:
                        etype = str(self.rng.choice(["page_view", "product_view", "search", "add_to_cart"]))
                    user = (order or orders_by_person.get(person, [{"account_id": ""}])[0])["account_id"]
                    rec = _rec(person, t, event_id=new_id(self.rng, "E"), device_id=device,
                               user_id=user if login_at is not None and k >= login_at else "",
                               session_hint=hint, event_type=etype, event_ts=self.clock.iso(t), platform=platform,
                               sku=f"SKU-{int(self.rng.integers(0, 10)):02d}{int(self.rng.integers(0, 40)):03d}"
                               if etype in ("product_view", "add_to_cart") else "",
                               order_id=order["order_id"] if etype == "purchase" else "")
                    out.append(rec)
        return out

    def tickets(self) -> list[Record]:
        pop, out = self.pop, []
        for i in range(len(pop.person_id)):
            years = (self.history_days - pop.first_seen[i]) / 365.0
            for _ in range(int(self.rng.poisson(pop.support_need[i] * years * (1.5 - pop.satisfaction[i])))):
                day = float(self.rng.uniform(pop.first_seen[i], self.history_days))
                category = TICKET_CATEGORIES[int(self.rng.integers(0, len(TICKET_CATEGORIES)))]
                rec = _rec(pop.person_id[i], day, ticket_id=new_id(self.rng, "K"))
                respond = day + self.hours(0.2, 30)
                resolved = respond + self.hours(1, 120)
                rec.update(email=self.email_of(i, rec), account_id=self.account[i] if self.rng.random() < 0.5 else "",
                           channel=str(self.rng.choice(["email", "phone", "chat"])), category=category,
                           priority=str(self.rng.choice(["low", "normal", "high"], p=[0.3, 0.55, 0.15])),
                           created_at=self.clock.iso(day),
                           first_response_at=self.clock.iso(respond) if respond < self.history_days else "",
                           resolved_at=self.clock.iso(resolved) if resolved < self.history_days else "",
                           text=(TICKET_TEXT_ZH if self.writes_chinese(i) else TICKET_TEXT)[category][
                               int(self.rng.integers(0, 2))])
                out.append(rec)
        return out

    def surveys(self) -> list[Record]:
        pop, out = self.pop, []
        for i, times in enumerate(self.purchases):
            for t in times:
                if self.rng.random() > 0.3 * pop.engagement[i]:
                    continue
                day = t + float(self.rng.uniform(1, 10))
                if day >= self.history_days:
                    continue
                nps = self.rng.random() < 0.5
                sat = float(np.clip(pop.satisfaction[i] + self.rng.normal(0, 0.1), 0, 1))
                score = round(sat * 10) if nps else 1 + round(sat * 4)
                if self.writes_chinese(i):
                    mood = COMMENTS_GOOD_ZH if sat > 0.7 else COMMENTS_MID_ZH if sat > 0.4 else COMMENTS_BAD_ZH
                else:
                    mood = COMMENTS_GOOD if sat > 0.7 else COMMENTS_MID if sat > 0.4 else COMMENTS_BAD
                rec = _rec(pop.person_id[i], day, response_id=new_id(self.rng, "R"))
                rec.update(email=self.email_of(i, rec), survey_type="NPS" if nps else "CSAT", score=str(score),
                           comment=mood[int(self.rng.integers(0, 3))] if self.rng.random() < 0.6 else "",
                           responded_at=self.clock.iso(day))
                out.append(rec)
        return out

    def campaign_events(self, campaign_days: list[int]) -> list[Record]:
        pop, out = self.pop, []
        for i in range(len(pop.person_id)):
            if not pop.email_opt_in[i] or pop.is_test[i]:
                continue
            for cday in campaign_days:
                if cday < pop.first_seen[i] or self.rng.random() < 0.5:
                    continue
                campaign = f"CMP-{self.clock.date(cday).replace('-', '')}"
                t = cday + self.hours(6, 12)
                steps = ["sent"]
                if self.rng.random() < 0.6 * pop.engagement[i]:
                    steps.append("open")
                    if self.rng.random() < 0.3:
                        steps.append("click")
                if self.rng.random() < 0.01 * (1.5 - pop.satisfaction[i]):
                    steps.append("unsubscribe")
                for step in steps:
                    t += self.hours(0.1, 24)
                    rec = _rec(pop.person_id[i], t, interaction_id=new_id(self.rng, "M"), campaign_id=campaign,
                               event_type=step, event_ts=self.clock.iso(t))
                    rec["email"] = self.email_of(i, rec)
                    out.append(rec)
                if steps[-1] == "unsubscribe":
                    break
        return out

    def referrals(self) -> list[Record]:
        """Referred buyers name an earlier buyer with a loyalty number as their referrer."""
        pop, out = self.pop, []
        referrers = [i for i in range(len(pop.person_id)) if self.loyalty[i] and not pop.is_prospect[i]]
        for i in np.flatnonzero((pop.signup_channel == "referral") & ~pop.is_test):
            earlier = [j for j in referrers if pop.first_seen[j] < pop.first_seen[i] - 1 and j != i]
            if not earlier:
                continue
            j = earlier[int(self.rng.integers(0, len(earlier)))]
            day = max(float(pop.first_seen[i]) - float(self.rng.uniform(0, 1)), float(pop.first_seen[j]))
            rec = _rec(pop.person_id[j], day, referral_id=new_id(self.rng, "F"),
                       referrer_loyalty_number=self.loyalty[j], referred_at=self.clock.iso(day))
            rec["referred_email"] = self.email_of(int(i), rec)
            rec["_referred_person"] = pop.person_id[i]
            out.append(rec)
        return out
