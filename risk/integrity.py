"""Model integrity: each version ships a manifest of its files' SHA-256 hashes, signed with
Ed25519; the realtime side verifies it before it loads the version.

    <model_dir>/<version>/MANIFEST.json   {"version", "algorithm", "key_id", "files": {name: sha256}}
    <model_dir>/<version>/MANIFEST.sig    the Ed25519 signature of MANIFEST.json's bytes, hex

Why a signature and not an HMAC (docs/security.md, C15): the realtime workers only verify,
so they hold only the public key; a compromised realtime worker (the side that parses
untrusted input) cannot sign a version. With an HMAC every verifier could also sign. The
private key lives only where versions are written (the batch workers' Secret).

The key is a 32-byte Ed25519 seed in hex (`MODEL_SIGNING_KEY` / `MODEL_SIGNING_KEY_FILE`); the
verifying side needs only the public key (`MODEL_VERIFY_KEY` / `_FILE`). Without either the
local stack uses `DEV_SEED`, a published development key: production sets
`MODEL_SIGNING_REQUIRE_KEY=true`, which refuses to start without a configured key.

The content hash of a version (`content_hash`) is the SHA-256 of its manifest's bytes: it
names every byte the service loads, so a decision record can name exactly what decided.

The pointer `<model_dir>/CURRENT` is signed too (`pointer_text`, `verify_pointer`): its first
line is the version in service (what people and older tools read), its second a JSON record
of the promotion's sequence number, time, key id and the Ed25519 signature of all of them, so
whoever can write the model volume without the key cannot point the service at another
version, signed or not. The sequence grows with every promotion or rollback; a realtime
process refuses a pointer older than one it has served (a replayed copy of an old CURRENT).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from onboarding.decision import MODEL_INTEGRITY_ERROR_PREFIX
from risk.errors import ModelError

__all__ = [
    "DEV_SEED",
    "MANIFEST_FILE",
    "SIGNATURE_FILE",
    "ModelIntegrityError",
    "Pointer",
    "Signer",
    "Verifier",
    "content_hash",
    "pointer_text",
    "sign_version",
    "verify_pointer",
    "verify_version",
]

MANIFEST_FILE = "MANIFEST.json"
SIGNATURE_FILE = "MANIFEST.sig"
ALGORITHM = "ed25519"
# The files a version must have signed: everything `risk.artifacts.load_model` reads.
SIGNED_FILES = ("model.skops", "metadata.json")
# The development key: public on purpose (it signs the local stack's and the tests' models).
# A service that must not accept it sets MODEL_SIGNING_REQUIRE_KEY=true and its own key.
DEV_SEED = hashlib.sha256(b"onboarding-decisions development model signing key").hexdigest()


class ModelIntegrityError(ModelError):
    """A model version is unsigned, signed by another key, or a file differs from its manifest."""

    def __init__(self, version: str, problem: str) -> None:
        self.version = version
        self.problem = problem
        super().__init__(f"{MODEL_INTEGRITY_ERROR_PREFIX} version {version!r} refused: {problem}")


def _seed(hex_seed: str, name: str) -> bytes:
    try:
        seed = bytes.fromhex(hex_seed.strip())
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise ModelError(f"{name} must be 64 hex digits (a 32-byte Ed25519 key)")
    return seed


def _key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Verifier:
    """The public key versions must be signed with."""

    public_key_hex: str

    @classmethod
    def of_seed(cls, seed_hex: str) -> Verifier:
        return Signer(seed_hex).verifier()

    @property
    def key_id(self) -> str:
        return _key_id(self._public())

    @property
    def is_dev(self) -> bool:
        return self == Verifier.of_seed(DEV_SEED)

    def _public(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(_seed(self.public_key_hex, "MODEL_VERIFY_KEY"))


@dataclass(frozen=True)
class Signer:
    """The private key (an Ed25519 seed, hex) that signs versions."""

    seed_hex: str = DEV_SEED

    def __post_init__(self) -> None:
        _seed(self.seed_hex, "MODEL_SIGNING_KEY")

    def __repr__(self) -> str:  # never print the key
        return f"Signer(key_id={self.verifier().key_id})"

    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(_seed(self.seed_hex, "MODEL_SIGNING_KEY"))

    def verifier(self) -> Verifier:
        public = self._private().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Verifier(public.hex())

    def sign(self, data: bytes) -> bytes:
        return self._private().sign(data)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sign_version(folder: Path, signer: Signer) -> str:
    """Write the manifest of a version's files and its signature. Returns the content hash."""
    manifest = {
        "version": folder.name,
        "algorithm": ALGORITHM,
        "key_id": signer.verifier().key_id,
        "files": {name: _sha256(folder / name) for name in SIGNED_FILES},
    }
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (folder / MANIFEST_FILE).write_bytes(data)
    (folder / SIGNATURE_FILE).write_text(signer.sign(data).hex() + "\n")
    return hashlib.sha256(data).hexdigest()


def content_hash(folder: Path) -> str | None:
    """The SHA-256 of a version's manifest (None when it has none)."""
    try:
        return hashlib.sha256((folder / MANIFEST_FILE).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def verify_version(folder: Path, verifier: Verifier) -> str:
    """Check a version's signature and every file against its manifest, before anything in
    it is parsed. Returns its content hash; raises `ModelIntegrityError` saying what is wrong."""
    version = folder.name
    if not folder.is_dir():  # a broken promotion, not tampering: an ordinary model error
        raise ModelError(f"model version {version!r} does not exist in {folder.parent}")
    try:
        data = (folder / MANIFEST_FILE).read_bytes()
        signature_hex = (folder / SIGNATURE_FILE).read_text().strip()
    except FileNotFoundError as err:
        raise ModelIntegrityError(version, f"unsigned: {Path(str(err.filename)).name} is missing") from None
    except OSError as err:
        raise ModelIntegrityError(version, f"cannot read its signature: {err}") from err
    try:
        verifier._public().verify(bytes.fromhex(signature_hex), data)
    except (InvalidSignature, ValueError):
        raise ModelIntegrityError(
            version, f"its manifest's signature does not verify with the service's key (key id {verifier.key_id})"
        ) from None
    manifest: dict[str, Any] = json.loads(data)
    if manifest.get("version") != version:
        raise ModelIntegrityError(version, f"its manifest was signed for version {manifest.get('version')!r}")
    files = manifest.get("files") or {}
    for name in SIGNED_FILES:
        if name not in files:
            raise ModelIntegrityError(version, f"{name} is not in its signed manifest")
        try:
            actual = _sha256(folder / name)
        except OSError as err:
            raise ModelIntegrityError(version, f"cannot read {name}: {err}") from err
        if actual != files[name]:
            raise ModelIntegrityError(
                version, f"{name} was changed after signing (sha256 {actual[:12]}…, signed {str(files[name])[:12]}…)"
            )
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Pointer:
    """What a signed CURRENT says: the version in service, the promotion's sequence and time."""

    version: str
    sequence: int
    promoted_at: str


def _pointer_bytes(version: str, sequence: int, promoted_at: str) -> bytes:
    return f"onboarding-model CURRENT v1\n{version}\n{sequence}\n{promoted_at}\n".encode()


def pointer_text(pointer: Pointer, signer: Signer) -> str:
    """The text of a signed CURRENT: the version, then the signed promotion record."""
    signature = signer.sign(_pointer_bytes(pointer.version, pointer.sequence, pointer.promoted_at)).hex()
    record = {
        "sequence": pointer.sequence,
        "promoted_at": pointer.promoted_at,
        "key_id": signer.verifier().key_id,
        "signature": signature,
    }
    return f"{pointer.version}\n{json.dumps(record, sort_keys=True)}\n"


def pointer_sequence(text: str) -> int:
    """The sequence number a CURRENT's text claims (unverified; 0 when it has none): where the
    next promotion counts on from."""
    lines = text.splitlines()
    try:
        return int(json.loads(lines[1])["sequence"]) if len(lines) > 1 else 0
    except (ValueError, KeyError, TypeError):
        return 0


def verify_pointer(text: str, verifier: Verifier) -> Pointer:
    """Check a CURRENT's signature with the service's key; returns what it says, or raises
    `ModelIntegrityError` naming the version it claims and what is wrong."""
    lines = text.splitlines()
    version = lines[0].strip() if lines else ""
    if not version:
        raise ModelIntegrityError("", "CURRENT is empty")
    if len(lines) < 2:
        raise ModelIntegrityError(
            version,
            "CURRENT is not signed (written by hand or by a release before pointers were signed): "
            "sign it on the batch side with `onboarding-model sign-current`",
        )
    try:
        record = json.loads(lines[1])
        pointer = Pointer(version, int(record["sequence"]), str(record["promoted_at"]))
        signature = bytes.fromhex(str(record["signature"]))
    except (ValueError, KeyError, TypeError):
        raise ModelIntegrityError(version, "CURRENT's signature line is not a signed promotion record") from None
    try:
        verifier._public().verify(signature, _pointer_bytes(pointer.version, pointer.sequence, pointer.promoted_at))
    except InvalidSignature:
        raise ModelIntegrityError(
            version,
            f"CURRENT's signature does not verify with the service's key (key id {verifier.key_id}): "
            "it was edited by hand or signed with another key",
        ) from None
    return pointer
