"""Personal data protection: keyed hashes for matching, column encryption for the vault, masks.

Threat model (short): analysts and BI tools read silver and gold tables, where direct contact
points (e-mail, phone, street) appear only masked or as keyed hashes; the raw values live
in `silver.pii_vault`, each column encrypted with AES-256-GCM, readable only with the
encryption key. The hashes are HMAC-SHA256 with a secret key, so a stolen table cannot be
reversed by hashing a list of known e-mails (as plain SHA-256 could). Keys come from the
environment (or, on the local and test profiles only, from key files generated on first
use in the project's `.cache/`); they are never in the repository or in any table. Not
covered: a compromised Spark driver (it holds the keys while it runs) and names, postcodes
and birth dates in silver, which identity resolution needs in clear.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.platform.config import Settings

HMAC_ENV = "CDP_PII_HMAC_KEY"
ENCRYPTION_ENV = "CDP_PII_ENCRYPTION_KEY"
NONCE_BYTES = 12


class MissingKey(RuntimeError):
    """A PII key is not configured."""


@dataclass(frozen=True)
class PiiKeys:
    hmac_key: bytes = b""
    encryption_key: bytes = b""

    def __repr__(self) -> str:  # never print key material
        return "PiiKeys(<redacted>)"


def _key_from(env_name: str, key_file: Path | None, environ: dict[str, str]) -> bytes:
    if environ.get(env_name):
        key = base64.b64decode(environ[env_name])
    elif key_file is not None:
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.b64encode(os.urandom(32)))
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


def _aesgcm_encrypt_udf(key: bytes):
    @F.pandas_udf(T.BinaryType())
    def encrypt(plain: pd.Series, context: pd.Series) -> pd.Series:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        aead = AESGCM(key)

        def one(text: str | None, ctx: str | None) -> bytes | None:
            if text is None:
                return None
            nonce = os.urandom(NONCE_BYTES)
            return nonce + aead.encrypt(nonce, text.encode("utf-8"), (ctx or "").encode("utf-8"))

        return pd.Series([one(p, c) for p, c in zip(plain, context)], dtype=object)

    return encrypt


def _aesgcm_decrypt_udf(key: bytes):
    @F.pandas_udf(T.StringType())
    def decrypt(cipher: pd.Series, context: pd.Series) -> pd.Series:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        aead = AESGCM(key)

        def one(blob: bytes | None, ctx: str | None) -> str | None:
            if blob is None:
                return None
            blob = bytes(blob)
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], (ctx or "").encode("utf-8")).decode("utf-8")

        return pd.Series([one(b, c) for b, c in zip(cipher, context)], dtype=object)

    return decrypt


def encrypt(value: Column, context: Column, key: bytes) -> Column:
    """AES-256-GCM with a random nonce; `context` (e.g. record id and field) is authenticated
    as associated data, so a ciphertext moved to another row or field fails to decrypt."""
    return _aesgcm_encrypt_udf(key)(value, context)


def decrypt(value: Column, context: Column, key: bytes) -> Column:
    """Inverse of `encrypt`; raises (InvalidTag) on a wrong key, context or tampered value."""
    return _aesgcm_decrypt_udf(key)(value, context)


def mask_email(email: Column) -> Column:
    """'ann.lee@example.com' -> 'a***@example.com'."""
    return F.when(email.isNotNull(), F.concat(F.substring(email, 1, 1), F.lit("***@"), F.split(email, "@")[1]))


def mask_phone(phone: Column) -> Column:
    """'+12125550100' -> '***0100'."""
    return F.when(phone.isNotNull(), F.concat(F.lit("***"), F.substring(phone, -4, 4)))


def pii_keys(settings: Settings) -> PiiKeys:
    """The keys of these settings: from the environment, or generated under `pii.local_key_dir`."""
    key_dir = settings.pii.local_key_dir
    return load_keys(settings.root / key_dir if key_dir else None)
