"""Personal data protection: keyed hashes for matching, column encryption, masks, suppression keys.

Threat model (short; the README's Security section has it per layer): bronze holds every personal field of a
raw source (e-mail, phone, names, street, birth date, free text) encrypted, and the quarantine every rejected
line; silver and gold carry direct contact points only masked or as keyed hashes, and the raw values live in
`silver.pii_vault`, encrypted. Encryption is AES-256-GCM (Spark's `aes_encrypt`: random nonce, then ciphertext
and tag) with the record and field as associated data. The hashes are HMAC-SHA256 with a secret key, so a
stolen table cannot be reversed by hashing a list of known e-mails (as plain SHA-256 could). Keys come from the
environment (or, on the local and test profiles only, from key files generated on first use in the project's
`.cache/`); they are never in the repository or in any table. Not covered: a compromised Spark driver (it holds
the keys while it runs) and names, postcodes and birth dates in silver, which identity resolution needs in clear.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.platform.config import Settings

HMAC_ENV = "CDP_PII_HMAC_KEY"
ENCRYPTION_ENV = "CDP_PII_ENCRYPTION_KEY"


class MissingKey(RuntimeError):
    """A PII key is not configured."""


@dataclass(frozen=True)
class PiiKeys:
    hmac_key: bytes = b""
    encryption_key: bytes = b""

    def __repr__(self) -> str:  # never print key material
        return "PiiKeys(<redacted>)"


def _generate_key(key_file: Path) -> None:
    """A new random key at `key_file` unless one is there. Written whole under another name (mode 0600) and
    linked into place: a process starting beside this one (the suite's two workers on a fresh clone) reads
    no file or the whole key, never a half-written one, and the first key linked is everyone's."""
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(dir=key_file.parent, prefix=f".{key_file.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64encode(os.urandom(32)))
        os.link(staged, key_file)
    except FileExistsError:
        pass
    finally:
        os.unlink(staged)


def _key_from(env_name: str, key_file: Path | None, environ: dict[str, str]) -> bytes:
    if environ.get(env_name):
        key = base64.b64decode(environ[env_name])
    elif key_file is not None:
        if not key_file.exists():
            _generate_key(key_file)
        key = base64.b64decode(key_file.read_bytes())
    else:
        raise MissingKey(f"set {env_name} (32 random bytes, base64) from your secret store")
    if len(key) != 32:
        raise MissingKey(f"{env_name} must be 32 bytes (base64-encoded), got {len(key)}")
    return key


def load_keys(local_key_dir: Path | None, environ: dict[str, str] | None = None) -> PiiKeys:
    """Keys from the environment; `local_key_dir` (local/test profiles only) holds generated ones."""
    environ = dict(os.environ if environ is None else environ)
    files = (local_key_dir / "hmac.key", local_key_dir / "encryption.key") if local_key_dir else (None, None)
    return PiiKeys(_key_from(HMAC_ENV, files[0], environ), _key_from(ENCRYPTION_ENV, files[1], environ))


def keyed_hash(value: Column, key: bytes) -> Column:
    """HMAC-SHA256 (RFC 2104) of a string column as hex, with Spark built-ins only (no UDF)."""
    block = 64
    key = hashlib.sha256(key).digest() if len(key) > block else key.ljust(block, b"\0")
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    inner = F.unhex(F.sha2(F.concat(F.lit(ipad), F.encode(value, "UTF-8")), 256))
    return F.when(value.isNotNull(), F.sha2(F.concat(F.lit(opad), inner), 256))


def encrypt(value: Column, context: Column, key: bytes) -> Column:
    """AES-256-GCM with a random nonce, as Spark's `aes_encrypt` lays it out (nonce, ciphertext, tag); `context`
    (e.g. record id and field) is authenticated as associated data, so a ciphertext moved to another row or field
    fails to decrypt. Spark built-ins: no Python worker. Always alias the result: its default name shows the key."""
    return F.aes_encrypt(value.cast("string"), F.lit(key), F.lit("GCM"), F.lit("DEFAULT"), F.lit(b""),
                         F.encode(F.coalesce(context, F.lit("")), "UTF-8"))


def decrypt(value: Column, context: Column, key: bytes) -> Column:
    """Inverse of `encrypt`, as text; fails the query on a wrong key, context or tampered value."""
    return F.aes_decrypt(value, F.lit(key), F.lit("GCM"), F.lit("DEFAULT"),
                         F.encode(F.coalesce(context, F.lit("")), "UTF-8")).cast("string")


def seal(df: DataFrame, columns: Iterable[str], context: Column, key: bytes) -> DataFrame:
    """`df` with each of `columns` replaced by its ciphertext (`encrypt`), `context|<column>` as associated data."""
    return df.withColumns({c: encrypt(F.col(c), F.concat_ws("|", context, F.lit(c)), key) for c in columns})


def unseal(df: DataFrame, columns: dict[str, str], context: Column, key: bytes) -> DataFrame:
    """Inverse of `seal`: each column of `columns` (name -> Spark SQL type) decrypted and cast back to its type."""
    return df.withColumns({c: decrypt(F.col(c), F.concat_ws("|", context, F.lit(c)), key).cast(t)
                           for c, t in columns.items()})


def suppression_key(node: Column, key: bytes) -> Column:
    """What the suppression list (ops.erased_subjects) holds of an erased person's identifier (an identity-graph
    node, 'email:<keyed hash>', 'account:<id>'...): a keyed hash of it, in its own domain, so the list holds
    none of the keyed hashes silver and gold use, and nothing that leads back to a contact point."""
    return keyed_hash(F.concat(F.lit("erased|"), node), key)


def mask_email(email: Column) -> Column:
    """'ann.lee@example.com' -> 'a***@example.com'."""
    return F.when(email.isNotNull(), F.concat(F.substring(email, 1, 1), F.lit("***@"), F.split(email, "@")[1]))


def mask_phone(phone: Column) -> Column:
    """'+12125550100' -> '***0100'."""
    return F.when(phone.isNotNull(), F.concat(F.lit("***"), F.substring(phone, -4, 4)))


def pii_keys(settings: Settings) -> PiiKeys:
    """The keys of these settings: from the environment, or generated under `pii.local_key_dir`."""
    return load_keys(settings.pii.local_key_dir)
