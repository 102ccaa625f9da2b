"""The spark-submit application of every pipeline stage.

    spark-submit [--master ...] jobs/submit.py STAGE YYYY-MM-DD RUN_ID
    spark-submit [--master ...] jobs/submit.py erase YYYY-MM-DD RUN_ID --request-id ID

The Airflow DAGs submit this file (with the `jobs` and `schemas` packages shipped as a zip in
`--py-files`), so the same stage code runs in local mode or on any cluster the Spark connection
points to. Exit codes: 0 done; 3 the data failed a check (a quality gate or a source contract), the
date is before the stage's latest published one,
an erasure request is unknown or names nobody, where retrying will not help (the reason is written to
$CDP_FAILURE_FILE when set); anything else a failure worth retrying.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

DATA_FAILURE = 3


def main(argv: list[str] | None = None) -> int:
    # Imported here: the module is also read by the DAGs for DATA_FAILURE, without Spark.
    from jobs.delivery.erasure import ErasureError
    from jobs.ingest.batches import ContractViolation
    from jobs.platform.config import load_settings
    from jobs.platform.quality import QualityGateFailed
    from jobs.platform.runlog import DateOrderError, run_stage

    parser = argparse.ArgumentParser(prog="submit.py", description=__doc__.splitlines()[0])
    parser.add_argument("stage")
    parser.add_argument("date", type=date.fromisoformat)
    parser.add_argument("run_id")
    parser.add_argument("--request-id", default="", help="erase: the request id (cdp erase-request)")
    args = parser.parse_args(argv)
    try:
        if args.stage == "erase":
            from jobs.delivery.erasure import erase
            from jobs.platform.runtime import spark_session

            settings = load_settings()
            result = erase(spark_session(settings), settings, args.request_id)
        else:
            from jobs.platform.stages import stage

            result = run_stage(args.stage, load_settings(), args.date, args.run_id,
                               f"airflow:{stage(args.stage).dag}/{args.run_id}")
    except (QualityGateFailed, ContractViolation, ErasureError, DateOrderError) as exc:
        print(str(exc), file=sys.stderr)
        if os.environ.get("CDP_FAILURE_FILE"):
            Path(os.environ["CDP_FAILURE_FILE"]).write_text(str(exc))
        return DATA_FAILURE
    print(json.dumps({"stage": args.stage, "result": result}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
