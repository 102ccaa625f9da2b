"""Turn one chunk of the latent population into raw records of every channel, with dirt.

Each source is built column-wise (`landing.Records`) from its own random stream, so a source's
records do not depend on which other sources are built (`cdp generate --contacts-only` writes the
contacts of a full run). Purchases drive orders, store transactions, surveys and the sessions that
end in an order (`commerce.py`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.platform.settings import DirtConfig
from jobs.tools.generate import dirt, text
from jobs.tools.generate.landing import Records
from jobs.tools.generate.population import CITIES, FAMILY, SIGNUP_CHANNELS, Population, Purchases
from jobs.tools.generate.text import Clock

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
# positions, drawn the same way.
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
# Random streams of a chunk, one per part (numbers, so that adding one leaves the others as they are).
STREAMS = {"accounts": 1, "contacts": 2, "transactions": 3, "events": 4, "tickets": 5, "surveys": 6,
           "campaign_events": 7, "referrals": 8, "landing": 9}


def hours(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """Random durations between lo and hi hours, in days."""
    return rng.uniform(lo, hi, n) / 24.0


def flags(values: np.ndarray) -> pa.StringArray:
    return text.where(values, "true", "false")


class ChunkBuilder:
    """Builds every source's records for one chunk; the randomness of each comes from its stream."""

    def __init__(self, seed: int, chunk: int, pop: Population, purchases: Purchases, history_days: int,
                 clock: Clock, dirt_rates: DirtConfig, eur_usd: np.ndarray, spend_p: float):
        self.seed, self.chunk = seed, chunk
        self.pop, self.purchases, self.spend_p = pop, purchases, spend_p
        self.history_days, self.clock, self.rates, self.eur_usd = history_days, clock, dirt_rates, eur_usd
        rng, n = self.stream("accounts"), len(pop)
        self.account = text.new_ids(rng, "A", n)
        self.account2 = text.new_ids(rng, "A", n)
        self.loyalty = text.where(pop.has_loyalty, text.concat("L", text.number(rng.integers(10**8, 10**9, n))), "")
        self.device_count = rng.integers(1, 4, n)
        self.device_first = np.concatenate([[0], np.cumsum(self.device_count)[:-1]])
        self.devices = text.new_ids(rng, "D", int(self.device_count.sum()))
        self.chinese = np.isin(pop.family_code, [FAMILY.index(f) for f in CHINESE_FAMILY_NAMES])

    def stream(self, name: str, *more: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.chunk, STREAMS[name], *more])

    # -- dirt helpers -------------------------------------------------------------------------
    def email_of(self, rng: np.random.Generator, recs: Records, emails: pa.StringArray | None = None) -> pa.StringArray:
        """The person's e-mail address (or `emails`, one per record), sometimes in a messy form."""
        emails = self.pop.email.take(pa.array(recs.person)) if emails is None else emails
        messy, mask = dirt.messy_emails(rng, emails, self.rates.email_case_whitespace)
        recs.flag("email_case_whitespace", mask)
        return messy

    def phone_of(self, rng: np.random.Generator, recs: Records) -> pa.StringArray:
        phones, mask = dirt.format_phones(rng, self.pop.phone_digits.take(pa.array(recs.person)),
                                          self.rates.phone_format_variation)
        recs.flag("phone_format_variation", mask)
        return phones

    def names_of(self, rng: np.random.Generator, recs: Records) -> None:
        take = pa.array(recs.person)
        for column, names, flag in (("first_name", self.pop.given_name, "first_name_typo"),
                                    ("last_name", self.pop.family_name, "last_name_typo")):
            recs.fields[column], mask = dirt.typos(rng, names.take(take), self.rates.name_typo)
            recs.flag(flag, mask)

    def person_fields(self, recs: Records) -> dict[str, pa.StringArray]:
        """The contact fields a person gives the same way every time."""
        pop, take = self.pop, pa.array(recs.person)
        return {"country": text.constant("US", len(recs)),
                "gender": pop.gender.take(take),
                "email_opt_in": flags(pop.email_opt_in[recs.person]),
                "sms_opt_in": flags(pop.sms_opt_in[recs.person])}

    # -- sources ------------------------------------------------------------------------------
    def contacts(self) -> Records:
        """A contact per person, a second one at the new address of those who moved, and a later
        duplicate of some (`duplicate_contacts`)."""
        pop, rng, n = self.pop, self.stream("contacts"), len(self.pop)
        moved = np.flatnonzero(pop.moved)
        moved_day = rng.uniform(pop.first_seen[moved], self.history_days)
        recs = Records(np.concatenate([np.arange(n), moved]), np.concatenate([pop.first_seen, moved_day]))
        is_new = np.arange(len(recs)) >= n
        recs.flag("moved_address", is_new)
        take_moved = pa.array(moved)
        city = np.concatenate([pop.city_index, pop.new_city_index[moved]])
        recs.fields.update(
            contact_id=text.new_ids(rng, "C", len(recs)),
            email=self.email_of(rng, recs),
            phone=self.phone_of(rng, recs),
            street=pa.concat_arrays([pop.street, pop.new_street.take(take_moved)]),
            city=text.pick([c[0] for c in CITIES], city),
            postcode=pa.concat_arrays([pop.postcode, pop.new_postcode.take(take_moved)]),
            birth_date=text.dates(pop.birth_date[recs.person]),
            loyalty_number=self.loyalty.take(pa.array(recs.person)),
            signup_channel=text.pick(SIGNUP_CHANNELS, pop.signup_channel[recs.person]),
            created_at=self.clock.iso(pop.first_seen[recs.person]),
            updated_at=self.clock.iso(recs.day),
            **self.person_fields(recs),
        )
        self.names_of(rng, recs)
        recs.blank_one(rng, self.rates.missing_field, ["phone", "email", "birth_date", "postcode", "street"])
        last_version_day = pop.first_seen.copy()
        last_version_day[moved] = moved_day
        return Records.concat([recs, self.duplicate_contacts(rng, last_version_day)])

    def duplicate_contacts(self, rng: np.random.Generator, after: np.ndarray) -> Records:
        """Second CRM records of some people, opened later from another channel: new contact id,
        the current address, no loyalty number, and identifiers that are missing or different
        (a second mailbox), so only a probabilistic match can tie them to the first records.

        Each is opened after the person's last move (`after`), so the current address is the one
        they would give. The identifier blanks are the point of the record, so `blank_one`'s
        random missing field is not applied on top. Test accounts get none: a second mailbox would
        escape the test-account patterns.
        """
        pop = self.pop
        who = np.flatnonzero(~pop.is_test & (rng.random(len(pop)) < self.rates.duplicate_contact))
        day = rng.uniform(after[who], self.history_days)
        recs = Records(who, day)
        recs.flag("duplicate_contact", np.ones(len(who), dtype=bool))
        take, moved = pa.array(who), pop.moved[who]
        city = np.where(moved, pop.new_city_index[who], pop.city_index[who])
        # One of the channels other than the one the person signed up with (rows padded to a table).
        options = [[SIGNUP_CHANNELS.index(c) for c in DUPLICATE_CHANNELS if c != signup] for signup in SIGNUP_CHANNELS]
        table = np.array([o + o[:1] * (len(DUPLICATE_CHANNELS) - len(o)) for o in options])
        signup = pop.signup_channel[who]
        channel = table[signup, rng.integers(0, np.array([len(o) for o in options])[signup])]
        email = self.email_of(rng, recs, pop.second_email.take(take))
        phone = self.phone_of(rng, recs)
        born, swappable = dirt.swapped_dates(pop.birth_date[who])
        swap = swappable & (rng.random(len(who)) < self.rates.dob_swapped)
        recs.flag("dob_swapped", swap)
        birth_date = text.where(swap, born, text.dates(pop.birth_date[who]))
        recs.fields.update(
            contact_id=text.new_ids(rng, "C", len(who)),
            email=text.where(rng.random(len(who)) < DUPLICATE_EMAIL_BLANK, "", email),
            phone=text.where(rng.random(len(who)) < DUPLICATE_PHONE_BLANK, "", phone),
            street=text.choose(moved.astype(int), [pop.street.take(take), pop.new_street.take(take)]),
            city=text.pick([c[0] for c in CITIES], city),
            postcode=text.choose(moved.astype(int), [pop.postcode.take(take), pop.new_postcode.take(take)]),
            birth_date=text.where(rng.random(len(who)) < DUPLICATE_BIRTH_DATE_BLANK, "", birth_date),
            loyalty_number=text.constant("", len(who)),
            signup_channel=text.pick(SIGNUP_CHANNELS, channel),
            created_at=self.clock.iso(day),
            updated_at=self.clock.iso(day),
            **self.person_fields(recs),
        )
        self.names_of(rng, recs)
        # A blank identifier carries no format defect.
        for column, flag in (("email", "email_case_whitespace"), ("phone", "phone_format_variation"),
                             ("birth_date", "dob_swapped")):
            recs.unflag(flag, pc.equal(recs.fields[column], "").to_numpy(zero_copy_only=False))
        return recs

    def tickets(self) -> Records:
        pop, rng, h = self.pop, self.stream("tickets"), self.history_days
        years = (h - pop.first_seen) / 365.0
        person = np.repeat(np.arange(len(pop)), rng.poisson(pop.support_need * years * (1.5 - pop.satisfaction)))
        m = len(person)
        day = rng.uniform(pop.first_seen[person], h)
        recs = Records(person, day)
        category = rng.integers(0, len(TICKET_CATEGORIES), m)
        respond = day + hours(rng, 0.2, 30, m)
        resolved = respond + hours(rng, 1, 120, m)
        # Templates: [language][category][variant], flattened.
        templates = [t for texts in (TICKET_TEXT, TICKET_TEXT_ZH) for c in TICKET_CATEGORIES for t in texts[c]]
        template = (self.chinese[person] * len(TICKET_CATEGORIES) + category) * 2 + rng.integers(0, 2, m)
        recs.fields.update(
            ticket_id=text.new_ids(rng, "K", m),
            email=self.email_of(rng, recs),
            account_id=text.where(rng.random(m) < 0.5, self.account.take(pa.array(person)), ""),
            channel=text.pick(["email", "phone", "chat"], rng.integers(0, 3, m)),
            category=text.pick(TICKET_CATEGORIES, category),
            priority=text.pick(["low", "normal", "high"], rng.choice(3, m, p=[0.3, 0.55, 0.15])),
            created_at=self.clock.iso(day),
            first_response_at=text.where(respond < h, self.clock.iso(respond), ""),
            resolved_at=text.where(resolved < h, self.clock.iso(resolved), ""),
            text=text.pick(templates, template),
        )
        return recs

    def surveys(self) -> Records:
        """Some purchases are followed by an NPS or CSAT survey, scored from the person's satisfaction."""
        pop, rng, h = self.pop, self.stream("surveys"), self.history_days
        bought = self.purchases
        day = bought.day + rng.uniform(1, 10, len(bought.day))
        keep = (rng.random(len(day)) <= 0.3 * pop.engagement[bought.person]) & (day < h)
        recs = Records(bought.person[keep], day[keep])
        m, person = len(recs), recs.person
        nps = rng.random(m) < 0.5
        sat = np.clip(pop.satisfaction[person] + rng.normal(0, 0.1, m), 0, 1)
        score = np.where(nps, np.rint(sat * 10), 1 + np.rint(sat * 4)).astype(np.int64)
        mood = np.where(sat > 0.7, 0, np.where(sat > 0.4, 1, 2))
        comments = [c for group in (COMMENTS_GOOD, COMMENTS_MID, COMMENTS_BAD, COMMENTS_GOOD_ZH, COMMENTS_MID_ZH,
                                    COMMENTS_BAD_ZH) for c in group]
        comment = text.pick(comments, (self.chinese[person] * 3 + mood) * 3 + rng.integers(0, 3, m))
        recs.fields.update(
            response_id=text.new_ids(rng, "R", m),
            email=self.email_of(rng, recs),
            survey_type=text.where(nps, "NPS", "CSAT"),
            score=text.number(score),
            comment=text.where(rng.random(m) < 0.6, comment, ""),
            responded_at=self.clock.iso(day[keep]),
        )
        return recs

    def campaign_events(self, campaign_days: list[int]) -> Records:
        """Opted-in people get about half of the campaigns sent after they became known: sent, then
        perhaps opened and clicked; an unsubscribe ends their campaigns."""
        pop, rng = self.pop, self.stream("campaign_events")
        days = np.asarray(campaign_days, dtype=np.float64)
        shape = (len(pop), len(days))
        sent = ((pop.email_opt_in & ~pop.is_test)[:, None] & (days[None, :] >= pop.first_seen[:, None])
                & (rng.random(shape) >= 0.5))
        opened = rng.random(shape) < 0.6 * pop.engagement[:, None]
        clicked = opened & (rng.random(shape) < 0.3)
        unsubscribed = sent & (rng.random(shape) < 0.01 * (1.5 - pop.satisfaction)[:, None])
        sent &= np.cumsum(unsubscribed, axis=1) - unsubscribed == 0   # nothing after an unsubscribe
        person, campaign = np.nonzero(sent)
        steps = np.stack([np.ones(len(person), dtype=bool), opened[person, campaign], clicked[person, campaign],
                          unsubscribed[person, campaign]], axis=1)
        mail, step = np.nonzero(steps)
        start = days[campaign] + hours(rng, 6, 12, len(person))
        delay = hours(rng, 0.1, 24, len(mail))
        elapsed = np.cumsum(delay)
        first = np.flatnonzero(np.r_[True, mail[1:] != mail[:-1]])
        elapsed -= np.repeat(elapsed[first] - delay[first], np.diff(np.r_[first, len(mail)]))
        t = start[mail] + elapsed
        recs = Records(person[mail], t)
        ids = text.concat("CMP-", pc.replace_substring(self.clock.date(days), "-", ""))
        recs.fields.update(
            interaction_id=text.new_ids(rng, "M", len(recs)),
            campaign_id=ids.take(pa.array(campaign[mail])),
            event_type=text.pick(["sent", "open", "click", "unsubscribe"], step),
            event_ts=self.clock.iso(t),
        )
        recs.fields["email"] = self.email_of(rng, recs)
        return recs

    def referrals(self) -> tuple[Records, np.ndarray]:
        """Referred buyers name an earlier buyer with a loyalty number as their referrer; the
        records (their person is the referrer) and the referred person of each."""
        pop, rng = self.pop, self.stream("referrals")
        referrers = np.flatnonzero(pop.has_loyalty & ~pop.is_prospect)
        referrers = referrers[np.argsort(pop.first_seen[referrers], kind="stable")]
        referred = np.flatnonzero((pop.signup_channel == SIGNUP_CHANNELS.index("referral")) & ~pop.is_test)
        # Referrers known more than a day before the referred person.
        earlier = np.searchsorted(pop.first_seen[referrers], pop.first_seen[referred] - 1, side="left")
        referred, earlier = referred[earlier > 0], earlier[earlier > 0]
        referrer = referrers[rng.integers(0, earlier)] if len(referred) else referred
        day = np.maximum(pop.first_seen[referred] - rng.uniform(0, 1, len(referred)), pop.first_seen[referrer])
        recs = Records(referrer, day)
        recs.fields.update(
            referral_id=text.new_ids(rng, "F", len(recs)),
            referrer_loyalty_number=self.loyalty.take(pa.array(referrer)),
            referred_email=self.email_of(rng, recs, pop.email.take(pa.array(referred))),
            referred_at=self.clock.iso(day),
        )
        return recs, referred

