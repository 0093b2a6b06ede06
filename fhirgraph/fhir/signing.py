"""The private key of SMART Backend Services and the client assertions signed with it.

A FHIR server that follows SMART Backend Services lets a client in without a
shared secret: the client proves who it is with a short JWT (the *client
assertion*) signed by its private key, and the authorisation server checks it
with the public key registered for the client. This module reads that key
(PEM, or a JWK or JWK Set as JSON), checks that it fits the signing algorithm
(RS384 and ES384 are the two SMART requires servers to accept), and signs the
assertions with PyJWT. The key's contents never appear in a message: every
error names the file and what is wrong with it, never what is in it.
"""

from __future__ import annotations

import json
import logging
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fhirgraph.errors import ConfigError

log = logging.getLogger("fhirgraph")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
#: the algorithms a client assertion can be signed with: key type, and for EC the curve
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "RS384": ("RSA", None),
    "ES384": ("EC", "secp384r1"),
    "RS256": ("RSA", None),
    "RS512": ("RSA", None),
    "ES256": ("EC", "secp256r1"),
    "ES512": ("EC", "secp521r1"),
}
#: what an EC key signs with when no algorithm is set: the one its curve is made for
EC_DEFAULTS = {curve: alg for alg, (kind, curve) in ALGORITHMS.items() if kind == "EC"}
#: SMART requires servers to accept RS384; most RSA keys are registered for it
RSA_DEFAULT = "RS384"
#: SMART: "no more than five minutes in the future"; a minute less leaves room for clock skew
ASSERTION_LIFETIME = 240
MIN_RSA_BITS = 2048
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def check_algorithm(value: str, what: str = "algorithm") -> str:
    """The signing algorithm's JOSE name (``rs384`` -> ``RS384``), or a ConfigError."""
    name = value.strip().upper()
    if name not in ALGORITHMS:
        raise ConfigError(
            f"{what} must be one of {', '.join(ALGORITHMS)} (SMART servers accept RS384 and ES384), "
            f"not {value!r}",
        )
    return name


class SigningKey:
    """A private key with the algorithm and key id its assertions carry; shows neither key half."""

    def __init__(self, private_key: PrivateKey, algorithm: str, key_id: str | None, path: str):
        self.private_key = private_key
        self.algorithm = algorithm
        self.key_id = key_id
        self.path = path

    def __repr__(self) -> str:
        return f"SigningKey({self.path}, {self.algorithm}, key_id={self.key_id!r})"

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        return self.private_key.public_key()


def client_assertion(key: SigningKey, client_id: str, audience: str, *, now: float | None = None) -> str:
    """A fresh client assertion (RFC 7523, SMART Backend Services): ``iss`` and ``sub`` the
    client, ``aud`` the token endpoint, a random ``jti`` (servers refuse one seen before),
    issued now and expiring within :data:`ASSERTION_LIFETIME` seconds."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": secrets.token_urlsafe(24),
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
    }
    headers: dict[str, Any] = {"typ": "JWT"}
    if key.key_id:
        headers["kid"] = key.key_id
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers=headers)


def load_signing_key(
    path: str | Path, *, key_id: str | None = None, algorithm: str | None = None, server: str = ""
) -> SigningKey:
    """Read the private key in ``path`` (PEM, JWK or JWK Set) and settle its algorithm and key id.

    ``key_id`` picks the key of a JWK Set and is the ``kid`` the assertions carry (default:
    the JWK's own ``kid``; a PEM key has none). ``algorithm`` defaults to the JWK's ``alg``,
    else RS384 for an RSA key and the curve's algorithm for an EC key (ES384 on P-384).
    A file other users can read is used, with a warning. ``server`` (``source``) names
    whose setting it is in messages.
    """
    what = f"{server} private_key_file".strip()
    file = Path(path).expanduser()
    try:
        info = file.stat()
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {file} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {file} is a directory, not a key file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {file}: {exc.strerror}") from None
    if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(f"warning: {what} {file} is readable by other users; run `chmod 600 {file}`")
    chosen = check_algorithm(algorithm, f"{server} algorithm".strip()) if algorithm else None
    if data.lstrip().startswith(b"{"):
        private_key, jwk_kid, jwk_alg = _from_jwk_file(data, file, key_id, what)
    else:
        private_key, jwk_kid, jwk_alg = _from_pem(data, file, what), None, None
    if chosen and jwk_alg and chosen != jwk_alg:
        raise ConfigError(
            f"{what} {file} is a key for {jwk_alg}, but the algorithm is set to {chosen}",
        )
    name = chosen or jwk_alg or _default_algorithm(private_key, file, what)
    _check_fit(private_key, name, file, what)
    return SigningKey(private_key, name, key_id or jwk_kid, str(file))


def _from_pem(data: bytes, file: Path, what: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        raise ConfigError(
            f"{what} {file} is encrypted with a passphrase; give the key unencrypted in a file "
            "only you can read (chmod 600)",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        if b"PUBLIC KEY" in data or b"CERTIFICATE" in data:
            kind = "a certificate" if b"CERTIFICATE" in data else "a public key"
            raise ConfigError(
                f"{what} {file} holds {kind}, not a private key; give the private key "
                "(the public key is what the server registers for the client)",
            ) from None
        raise ConfigError(
            f"{what} {file} is not a PEM private key or a JWK (JSON); give an unencrypted RSA or EC key",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(
            f"{what} {file} is a {type(key).__name__.removeprefix('_').replace('PrivateKey', '')} key; "
            "SMART Backend Services needs an RSA or EC key",
        )
    return key


def _from_jwk_file(
    data: bytes, file: Path, key_id: str | None, what: str
) -> tuple[PrivateKey, str | None, str | None]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{what} {file} is not valid JSON (a JWK or a JWK Set)") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{what} {file} is not a JWK or a JWK Set")
    if "keys" in document:
        jwks = document["keys"]
        if not isinstance(jwks, list) or not all(isinstance(k, dict) for k in jwks):
            raise ConfigError(f"{what} {file}: 'keys' must be a list of JWKs")
        candidates = [k for k in jwks if key_id is None or k.get("kid") == key_id]
        private = [k for k in candidates if "d" in k]
        if not private:
            kids = ", ".join(str(k["kid"]) for k in jwks if "d" in k and k.get("kid")) or "none"
            found = (
                f"no private key with kid {key_id!r} (private keys' kids: {kids})"
                if key_id
                else "no private key"
            )
            raise ConfigError(
                f"{what} {file} holds {found}; a JWK Set as published for the server holds only "
                "public keys: give the private one",
            )
        if len(private) > 1:
            kids = ", ".join(str(k.get("kid")) for k in private)
            raise ConfigError(
                f"{what} {file} holds {len(private)} private keys ({kids}); set key_id to pick one",
            )
        jwk_data = private[0]
    else:
        jwk_data = document
        if "d" not in jwk_data:
            raise ConfigError(
                f"{what} {file} is a public JWK (no 'd'); give the private key",
            )
    kty = jwk_data.get("kty")
    parsers: dict[str, Callable[[dict[str, Any]], Any]] = {
        "RSA": RSAAlgorithm.from_jwk,
        "EC": ECAlgorithm.from_jwk,
    }
    parse = parsers.get(str(kty))
    if parse is None:
        raise ConfigError(
            f"{what} {file} is a JWK of kty {kty!r}; SMART Backend Services needs an RSA or EC key",
        )
    try:
        # PyJWT's messages may quote the JWK, private parts included: never pass them on
        key = parse(jwk_data)
    except Exception:
        raise ConfigError(f"{what} {file} is not a valid {kty} JWK") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{what} {file} is not a private {kty} key")
    alg = jwk_data.get("alg")
    kid = jwk_data.get("kid")
    return key, str(kid) if kid else None, check_algorithm(str(alg), f"the 'alg' of {file}") if alg else None


def _default_algorithm(key: PrivateKey, file: Path, what: str) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return RSA_DEFAULT
    try:
        return EC_DEFAULTS[key.curve.name]
    except KeyError:
        raise ConfigError(
            f"{what} {file} is an EC key on curve {key.curve.name}; use P-384 (ES384) or P-256",
        ) from None


def _check_fit(key: PrivateKey, algorithm: str, file: Path, what: str) -> None:
    kind, curve = ALGORITHMS[algorithm]
    if isinstance(key, rsa.RSAPrivateKey):
        if kind != "RSA":
            raise ConfigError(
                f"{what} {file} is an RSA key, which cannot sign {algorithm}; use RS384 or an EC key",
            )
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(
                f"{what} {file} is an RSA key of {key.key_size} bits; use at least {MIN_RSA_BITS}",
            )
        return
    if kind != "EC":
        raise ConfigError(
            f"{what} {file} is an EC key, which cannot sign {algorithm}; use ES384 or an RSA key",
        )
    if key.curve.name != curve:
        raise ConfigError(
            f"{what} {file} is an EC key on curve {key.curve.name}, but {algorithm} needs {curve}",
        )
