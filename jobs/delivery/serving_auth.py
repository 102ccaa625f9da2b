"""Who may use the serving endpoint, and the HiveServer2 settings that enforce it.

Users and salted PBKDF2-SHA256 password hashes live in one file (`paths.serving_users`), one user a line,
``name:pbkdf2_sha256$iterations$salt$hash`` (base64), written by `cdp serve-user add NAME`; no password is
kept in clear anywhere. The server checks them with `cdp.serving.PasswordFileAuthenticator` (serving/java,
HiveServer2 CUSTOM authentication), which reads the file at every login. With `serving.authentication:
ldap` the server binds to the directory as the user instead (Hive's LDAP provider).

`server_properties` turns conf `serving:` and a role into Java system properties, set in the server's JVM
before the Thrift Server starts: Hive builds its authentication providers from a fresh HiveConf, which
reads system properties but not the server's Spark conf, and a secret (the keystore password) kept out of
the Spark conf is out of `SET` output too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from pathlib import Path

from jobs.platform.config import Settings

SCHEME = "pbkdf2_sha256"
ITERATIONS = 600_000   # OWASP's 2023 figure for PBKDF2-HMAC-SHA256; a login costs the server ~0.3 s of CPU
ROLES = ("analyst", "silver_reader")
_USER_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")


class ServingAuthError(ValueError):
    """A user name, password or authentication setting the endpoint cannot use."""


def hash_password(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """`password` as ``pbkdf2_sha256$iterations$salt$hash`` with a random 16-byte salt."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def read_users(path: Path) -> dict[str, str]:
    """User name -> stored hash, from the users file (none if it does not exist)."""
    if not path.is_file():
        return {}
    lines = (line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    return {name: stored.strip() for name, stored in lines}


def _write_users(path: Path, users: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(path.name + ".tmp")
    # Hashes are not passwords, but nobody else needs to read them.
    staged.write_text("".join(f"{name}:{stored}\n" for name, stored in sorted(users.items())))
    staged.chmod(0o600)
    staged.replace(path)


def add_user(path: Path, name: str, password: str, iterations: int = ITERATIONS) -> bool:
    """Add `name` to the users file, or set a new password; returns whether the user is new."""
    if not _USER_NAME.match(name):
        raise ServingAuthError(f"user name {name!r}: letters, digits and _ . @ - only")
    if len(password) < 12:
        raise ServingAuthError("the password must have at least 12 characters")
    users = read_users(path)
    new = name not in users
    users[name] = hash_password(password, iterations)
    _write_users(path, users)
    return new


def remove_user(path: Path, name: str) -> bool:
    """Remove `name` from the users file; returns whether it was there."""
    users = read_users(path)
    if users.pop(name, None) is None:
        return False
    _write_users(path, users)
    return True


def audit_log(settings: Settings) -> Path:
    """Where the endpoint logs its sessions, statements, errors and refused logins (JSON lines)."""
    return settings.paths.serving / "audit.jsonl"


def server_properties(settings: Settings, role: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The Java system properties of a server for `role`: authentication, TLS, the role's users, the audit log."""
    environ = os.environ if environ is None else environ
    conf = settings.serving
    props = {"cdp.serving.role": role, "cdp.serving.audit": str(audit_log(settings))}
    if conf.authentication == "password":
        users = settings.paths.serving_users
        if not read_users(users):
            raise ServingAuthError(f"no users in {users}: add one with `cdp serve-user add NAME`")
        props |= {"hive.server2.authentication": "CUSTOM",
                  "hive.server2.custom.authentication.class": "cdp.serving.PasswordFileAuthenticator",
                  "cdp.serving.users": str(users)}
        if role == "silver_reader":
            props["cdp.serving.allowed"] = ",".join(conf.silver_readers)
    else:
        if role == "silver_reader":
            # Hive's LDAP provider admits every user of the directory: no way to name the role's users.
            raise ServingAuthError("the silver_reader role needs serving.authentication: password")
        ldap = conf.ldap
        props["hive.server2.authentication"] = "LDAP"
        props["hive.server2.authentication.ldap.url"] = ldap.url
        if ldap.base_dn:
            props["hive.server2.authentication.ldap.baseDN"] = ldap.base_dn
        if ldap.domain:
            props["hive.server2.authentication.ldap.Domain"] = ldap.domain
    if role == "silver_reader" and not conf.silver_readers:
        raise ServingAuthError("serving.silver_readers is empty: name the users of the silver_reader role first")
    if conf.tls.enabled:
        password = environ.get(conf.tls.keystore_password_env)
        if not password:
            raise ServingAuthError(f"serving.tls is enabled: set {conf.tls.keystore_password_env} to the keystore's "
                                   "password")
        props |= {"hive.server2.use.SSL": "true",
                  "hive.server2.keystore.path": str(settings.root / conf.tls.keystore),
                  "hive.server2.keystore.password": password}
    return props
