"""The job code as spark-submit ships it: a zip of the `jobs` and `schemas` packages for
`--py-files`, and a two-line entry script outside any package.

The entry script lives apart from `jobs/` because spark-submit puts the application's folder
first on the driver's `sys.path`, where `jobs/profile/customer_profile.py` would shadow the standard library's
`profile` (which pyspark imports through cProfile).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

PACKAGES = ("jobs", "schemas")
ENTRY = "import sys\n\nfrom jobs.submit import main\n\nsys.exit(main())\n"


def build_job_package(root: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write `out_dir/cdp_jobs.zip` (the packages' .py files and the .json data they read, such as the
    identity's default model, in sorted order with fixed times, so the same code gives the same bytes) and
    `out_dir/cdp_submit.py`; return (zip, entry script)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for package in PACKAGES for suffix in ("*.py", "*.json")
                     for p in (root / package).rglob(suffix))
    archive, entry = out_dir / "cdp_jobs.zip", out_dir / "cdp_submit.py"
    # Written aside and moved into place: two tasks packaging at once never read a half zip.
    with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".zip", delete=False) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as bundle:
            for source in sources:
                info = zipfile.ZipInfo(source.relative_to(root).as_posix(), date_time=(2020, 1, 1, 0, 0, 0))
                bundle.writestr(info, source.read_bytes(), zipfile.ZIP_DEFLATED)
    os.replace(tmp.name, archive)
    if not entry.exists() or entry.read_text() != ENTRY:
        entry.write_text(ENTRY)
    return archive, entry
