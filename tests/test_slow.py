"""The slow end-to-end variants (`make test-slow`): a two-day backfill through Airflow, equal to each day
run in turn with `cdp run`; `cdp rebuild` of every stage from time travel; the refit and erasure DAGs run
for real; a whole erasure (a crash and a retry, every file under the data root searched byte for byte, the
person's records landed again). Run them whenever a change touches what they cover."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.platform import pii
from jobs.platform.config import Settings
from jobs.platform.rebuild import differences
from jobs.platform.stages import STAGES
from jobs.tools.generate import generate
from schemas import gold
from schemas.raw import CONTACTS
from tests.test_dags import _cdp, _isolated_env, _published, _table, assert_failed_at_ingest, corrupt_batch

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

FIRST_DAY, AS_OF, NEXT_DAY = "2026-11-19", "2026-11-20", "2026-11-21"
PEOPLE = 300


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Sample data for 300 people, then the daily DAG backfilled through Airflow over two days."""
    env = _isolated_env(tmp_path_factory.mktemp("backfill"))
    _cdp(env, "generate", "--customers", str(PEOPLE), "--workers", "1")
    run = _cdp(env, "backfill", "--start", FIRST_DAY, "--end", AS_OF, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return env


def test_the_backfill_publishes_every_stage_for_each_day(backfilled: dict[str, str], spark: SparkSession) -> None:
    for day in (FIRST_DAY, AS_OF):
        _published(spark, backfilled, day, PEOPLE)
    # The first day fitted the CLV model; the second scored with it (refits are the refit DAG's).
    models = _table(spark, backfilled, "ops.clv_models").collect()
    assert [(m.as_of_date.isoformat(), m.promoted) for m in models] == [(FIRST_DAY, True)]
    assert _table(spark, backfilled, "ops.resolution_runs").count() == 2


def test_a_two_day_backfill_equals_running_each_day_in_turn(
    backfilled: dict[str, str], spark: SparkSession, tmp_path: Path
) -> None:
    # The same sample, each day run in turn without Airflow (stages in one process, no spark-submit).
    env = _isolated_env(tmp_path)
    _cdp(env, "generate", "--customers", str(PEOPLE), "--workers", "1")
    for day in (FIRST_DAY, AS_OF):
        run = _cdp(env, "run", "--date", day, check=False)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    compared = {t.name: differences(_table(spark, backfilled, t.name), _table(spark, env, t.name))
                for t in gold.TABLES}
    assert all(c["published"] == c["rebuilt"] and c["only_published"] == c["only_rebuilt"] == 0
               for c in compared.values()), compared
    # Only the id history may be empty (no merge or split in two days of the sample).
    assert [name for name, c in compared.items() if c["published"] == 0] in ([], ["gold.customer_id_history"])


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "refit"])
def test_every_stage_of_yesterday_rebuilds_from_time_travel_as_published(
    backfilled: dict[str, str], tmp_path: Path, stage: str
) -> None:
    # Published since: today's run, which moved every state table on. The scratch warehouse holds only the
    # tables the stage declares, so an undeclared read would fail here.
    rebuild = _cdp(backfilled, "rebuild", "--stage", stage, "--date", FIRST_DAY, "--out", str(tmp_path),
                   check=False)
    assert rebuild.returncode == 0, rebuild.stdout[-3000:] + rebuild.stderr[-3000:]
    report = json.loads(rebuild.stdout[rebuild.stdout.index("{"):rebuild.stdout.rindex("}") + 1])
    assert set(report) == {t.name for t in STAGES[stage].writes if t.database != "ops"}
    assert all(r["published"] == r["rebuilt"] and r["only_published"] == r["only_rebuilt"] == 0
               for r in report.values()), report
    if stage == "report":
        assert (tmp_path / "reports" / "run" / FIRST_DAY / "index.html").is_file()


@pytest.fixture(scope="module")
def refitted(backfilled: dict[str, str]) -> dict[str, str]:
    run = _cdp(backfilled, "airflow-run", "--dag", "cdp_refit", "--date", AS_OF, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return backfilled


def test_the_refit_dag_fits_validates_and_decides(refitted: dict[str, str], spark: SparkSession) -> None:
    models = _table(spark, refitted, "ops.clv_models").where(F.col("as_of_date") == F.lit(AS_OF).cast("date"))
    (model,) = models.collect()
    assert model.decision and model.holdout_mae >= 0
    runs = _table(spark, refitted, "ops.pipeline_runs").where("stage = 'refit'").collect()
    assert [r.status for r in runs] == ["success"]


def test_the_refit_rebuilds_from_time_travel(refitted: dict[str, str], tmp_path: Path) -> None:
    rebuild = _cdp(refitted, "rebuild", "--stage", "refit", "--date", AS_OF, "--out", str(tmp_path), check=False)
    assert rebuild.returncode == 0, rebuild.stdout[-3000:] + rebuild.stderr[-3000:]
    assert "equals what was published" in rebuild.stdout


def test_the_erasure_dag_removes_the_person(refitted: dict[str, str], spark: SparkSession) -> None:
    graph = _table(spark, refitted, "gold.identity_graph")
    customer_id = graph.where("node_type = 'contact'").orderBy("customer_id").first().customer_id
    # The request is recorded first (a contact point would be read from stdin); the DAG takes only its id.
    request_id = _cdp(refitted, "erase-request", "--customer-id", customer_id).stdout.strip().splitlines()[-1]
    airflow = str(Path(sys.executable).with_name("airflow"))
    run = subprocess.run([airflow, "dags", "test", "cdp_erasure", AS_OF, "--conf",
                          json.dumps({"request_id": request_id})], env=refitted, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert _table(spark, refitted, "gold.identity_graph").where(F.col("customer_id") == customer_id).count() == 0
    assert _table(spark, refitted, "gold.customer_profile").where(F.col("customer_id") == customer_id).count() == 0
    erasures = _table(spark, refitted, "ops.erasures").collect()
    assert [(e.erasure_id, e.customer_id, e.status) for e in erasures] == [(request_id, customer_id, "done")]


# -- erasure: the whole of it, in this process, on a small warehouse of its own -------------------------------------
ERASURE_PEOPLE = 60


@pytest.fixture(scope="module")
def small_warehouse(settings: Settings, spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A sample of ERASURE_PEOPLE ingested, cleansed, resolved and profiled as of the sample's last day, with its
    landing, exports and truth in a folder of its own (the session's warehouse is emptied first)."""
    from tests.conftest import drop_every_table
    from tests.stage_tier import AS_OF as LAST_DAY
    from tests.stage_tier import run

    base = tmp_path_factory.mktemp("erasure")
    local = dataclasses.replace(settings, paths=dataclasses.replace(
        settings.paths, landing=base / "landing", truth=base / "truth", exports=base / "exports"))
    drop_every_table(spark)
    generate(local.generator, local.paths.landing, local.paths.truth, customers=ERASURE_PEOPLE)
    for stage in ("ingest", "cleanse", "resolve", "profile"):
        run(local, LAST_DAY, f"run-{stage}", stage)
    return local


def _person(spark: SparkSession, settings: Settings) -> dict:
    """A customer with an order, an e-mail and a phone, whose family name no one else has: their contact
    points as standardised and as given, keyed hashes, family name and contact records (with their lines)."""
    from jobs.ingest.batches import unsealed_bronze
    from jobs.platform.pii import pii_keys

    keys = pii_keys(settings)
    contacts = spark.table("silver.contacts").join(spark.table("gold.identity_graph").where(
        "node_type = 'contact'").select(F.substring_index("node", ":", -1).alias("contact_id"), "customer_id"),
        "contact_id")
    unique = contacts.groupBy("family_name").agg(F.countDistinct("customer_id").alias("n")).where("n = 1")
    buyers = spark.table("silver.orders").join(spark.table("gold.identity_graph").where("node_type = 'account'")
                                               .select(F.substring_index("node", ":", -1).alias("account_id"),
                                                       "customer_id"), "account_id").select("customer_id")
    vault = spark.table("silver.pii_vault").where("source = 'contacts'")
    row = contacts.join(unique, "family_name").join(buyers.distinct(), "customer_id").join(
        vault.where("email_enc IS NOT NULL AND phone_enc IS NOT NULL").withColumnRenamed("record_id", "contact_id")
        .select("contact_id", "email_enc", "phone_enc"), "contact_id").orderBy("customer_id").select(
        "customer_id", "family_name",
        pii.decrypt(F.col("email_enc"), F.concat_ws("|", F.lit("contacts"), "contact_id", F.lit("email")),
                    keys.encryption_key).alias("email"),
        pii.decrypt(F.col("phone_enc"), F.concat_ws("|", F.lit("contacts"), "contact_id", F.lit("phone")),
                    keys.encryption_key).alias("phone")).first()
    assert row is not None, "no person fits"
    theirs = contacts.where(F.col("customer_id") == row.customer_id)
    given = unsealed_bronze(spark.table("bronze.contacts"), CONTACTS, keys.encryption_key).join(
        theirs.select("contact_id"), "contact_id").select("email", "phone").collect()
    lines = [line for path in sorted((settings.paths.landing / "contacts").glob("*/*"))
             for line in path.read_text().splitlines()[1:]
             if line.split(",", 1)[0] in {r.contact_id for r in theirs.collect()}]
    return {"customer_id": row.customer_id, "email": row.email, "phone": row.phone, "family_name": row.family_name,
            "given": {v for r in given for v in (r.email, r.phone) if v and len(v.strip()) >= 6},
            "keys": {v for r in theirs.collect() for v in (r.email_key, r.phone_key) if v},
            "contact_ids": {r.contact_id for r in theirs.collect()}, "lines": lines}


def _files_mentioning(roots: list[Path], words: set[str]) -> list[str]:
    """Every file under `roots` whose content names one of `words` as a whole word, in any case: Parquet files
    (data and log checkpoints) read back and decoded, every other file's bytes (gzip opened)."""
    import gzip

    import pyarrow.parquet as pq

    pattern = re.compile("|".join(rf"(?<![a-z0-9._%+-]){re.escape(w.lower().strip())}(?![a-z0-9._%+-])"
                                  for w in words))
    found = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.name.endswith(".parquet"):
                text = json.dumps(pq.read_table(path).to_pylist(), default=str)
            else:
                data = path.read_bytes()
                text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8", "replace")
            if pattern.search(text.lower()):
                found.append(str(path))
    return found


def test_an_erasure_leaves_no_byte_of_the_person_resumes_after_a_crash_and_keeps_them_out(
    small_warehouse: Settings, spark: SparkSession
) -> None:
    from jobs.delivery.erasure import STEPS, ErasureError, erase, load_request, request_erasure
    from tests.stage_tier import AS_OF as LAST_DAY
    from tests.stage_tier import run
    from tests.test_erasure import _export

    settings = small_warehouse
    person = _person(spark, settings)
    _export(settings.paths.exports, "crm-before", "csv", [{"customer_id": person["customer_id"],
                                                          "email": person["email"]}])
    words = {person["email"], person["phone"], person["family_name"], *person["given"], *person["keys"]}
    roots = [settings.paths.warehouse, settings.paths.metastore, settings.paths.gx, settings.paths.alerts,
             settings.paths.landing, settings.paths.exports]
    roots = [r for r in roots if r.exists()]
    assert any("/landing/" in f for f in _files_mentioning(roots, words))    # the search finds them before

    with pytest.raises(ErasureError, match="not a valid email"):
        request_erasure(spark, settings, "email", "not an address", "test")
    erasure_id = request_erasure(spark, settings, "email", f"  {person['email'].upper()} ", "test")
    assert person["email"] not in json.dumps(load_request(spark, erasure_id), default=str)

    class Crash(RuntimeError):
        pass

    def crash_after_bronze(step: str) -> None:
        if step == "bronze":
            raise Crash(step)

    with pytest.raises(Crash):
        erase(spark, settings, erasure_id, after_step=crash_after_bronze)
    assert load_request(spark, erasure_id)["steps_done"] == list(STEPS[:STEPS.index("bronze") + 1])
    done = erase(spark, settings, erasure_id)         # the retry resumes with the gate samples
    assert done["status"] == "done" and done["steps_done"] == list(STEPS)
    assert done["customer_id"] == person["customer_id"] and done["exports_to_recall"] == ["crm-before"]
    assert done["rows_deleted"]["gold.identity_graph"] > 0 and done["rows_deleted"]["bronze.contacts"] > 0
    assert any("/landing/contacts/" in f for f in done["files_rewritten"])
    assert erase(spark, settings, erasure_id)["status"] == "done"      # done stays done

    # No file left names them: tables' data and logs, the metastore, Data Docs, landing files and exports.
    assert _files_mentioning(roots, words) == []

    # Their records land again, in a new batch and as a late file in an old one: they stay out.
    header = ",".join(CONTACTS.column_names)
    next_day = LAST_DAY + timedelta(days=1)
    old_batch = sorted((settings.paths.landing / "contacts").iterdir())[0]
    for folder in (settings.paths.landing / "contacts" / next_day.isoformat(), old_batch):
        folder.mkdir(exist_ok=True)
        (folder / "again.csv").write_text("\n".join([header, *person["lines"]]) + "\n")
    for stage in ("ingest", "cleanse", "resolve"):
        run(settings, next_day, f"run-again-{stage}", stage)
    silver_contacts = spark.table("silver.contacts")
    assert silver_contacts.where(F.col("contact_id").isin(*person["contact_ids"]) |
                                 F.col("email_key").isin(*person["keys"])).count() == 0
    assert spark.table("silver.pii_vault").where(F.col("email_key").isin(*person["keys"])).count() == 0
    nodes = [f"contact:{c}" for c in person["contact_ids"]] + [f"email:{k}" for k in person["keys"]]
    assert spark.table("gold.identity_graph").where(F.col("node").isin(*nodes)).count() == 0
    accounting = spark.table("ops.silver_accounting").where(
        (F.col("as_of_date") == F.lit(next_day)) & (F.col("source") == "contacts")).first()
    assert accounting.rejected_reasons.get("ERASED_PERSON", 0) >= len(person["contact_ids"])


def test_a_bad_batch_after_good_days_fails_its_gate_and_leaves_every_table_as_it_was(
    backfilled: dict[str, str], spark: SparkSession
) -> None:
    # Last in the module: the day after the backfill, refit and erasure, with a corrupt orders batch.
    env = backfilled
    published = {name: sorted(_table(spark, env, name).inputFiles())
                 for name in ("bronze.orders", "ops.ingest_accounting", "gold.customer_profile")}
    corrupt_batch(env, NEXT_DAY)
    failed = _cdp(env, "airflow-run", "--date", NEXT_DAY, check=False)
    assert_failed_at_ingest(spark, env, failed, NEXT_DAY)
    assert {name: sorted(_table(spark, env, name).inputFiles()) for name in published} == published
