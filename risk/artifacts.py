"""Versioned model artifacts: a skops file plus metadata, and a `current` pointer.

Layout of a model directory:

    <model_dir>/<version>/model.skops      the fitted Pipeline (skops: loading runs no code)
    <model_dir>/<version>/metadata.json    version, data hash, library versions, features,
                                           metrics, policy thresholds
    <model_dir>/<version>/MANIFEST.json    the SHA-256 of both files, and MANIFEST.sig its
                                           Ed25519 signature (`risk.integrity`)
    <model_dir>/CURRENT                    the version in service (first line), and the
                                           signed promotion record (`risk.integrity.Pointer`)

A new version becomes current by an atomic rename of CURRENT, so a reader sees the old
version or the new one, never half of either. `ModelStore.current()` verifies CURRENT's
signature at every call (a pointer edited by hand, or an older one put back, is refused:
`ModelIntegrityError`), caches the loaded model per process and reloads only when CURRENT
names another version, after verifying the version's signed manifest (a tampered or unsigned
version is refused the same way).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sklearn
import skops.io as sio
from sklearn.pipeline import Pipeline

from onboarding.settings import DATASETS
from risk.errors import ModelError
from risk.integrity import (
    ModelIntegrityError,
    Pointer,
    Signer,
    Verifier,
    content_hash,
    pointer_sequence,
    pointer_text,
    sign_version,
    verify_pointer,
    verify_version,
)
from risk.model import Scorer, feature_schema
from risk.policy import Policy

MODEL_FILE = "model.skops"
METADATA_FILE = "metadata.json"
CURRENT_FILE = "CURRENT"

# The only non-builtin types a model file may contain. skops refuses anything else, so a
# tampered file cannot smuggle in a callable.
TRUSTED_TYPES = [
    "risk.boosted.BoostedTrees",  # plain arrays: the compiled trees and their TreeSHAP tables
    "risk.blend.Blend",  # a BoostedTrees, a logistic pipeline and four floats
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.feature_extraction._dict_vectorizer.DictVectorizer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "numpy.dtype",
    "numpy.float64",
    "numpy.ndarray",
    "builtins.float",
]


@dataclass(frozen=True)
class LoadedModel:
    version: str
    scorer: Scorer  # a `risk.boosted.BoostedTrees` for the service's kind
    policy: Policy
    metadata: dict[str, Any]
    # The SHA-256 of the version's signed manifest (`risk.integrity`): names every byte loaded.
    content_hash: str | None = None


def save_model(
    model_dir: Path,
    pipeline: Pipeline,
    policy: Policy,
    data_sha256: str,
    metrics: dict[str, Any],
    make_current: bool = True,
    extra: dict[str, Any] | None = None,
    signer: Signer | None = None,
) -> str:
    """Write a new version, sign its manifest (`signer`, default the development key) and (by
    default) make it current. Returns the version."""
    created = datetime.now(UTC)
    version = f"{created:%Y%m%dT%H%M%SZ}-{data_sha256[:8]}"
    suffix = 1
    while (model_dir / version).exists():
        suffix += 1
        version = f"{created:%Y%m%dT%H%M%SZ}-{data_sha256[:8]}-{suffix}"
    target = model_dir / version
    target.mkdir(parents=True, exist_ok=False)
    sio.dump(pipeline, target / MODEL_FILE)
    metadata = {
        "version": version,
        "created_at": created.isoformat(),
        "training_data_sha256": data_sha256,
        "libraries": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "skops": _skops_version(),
        },
        "features": feature_schema(),
        "metrics": metrics,
        "policy": policy.to_dict(),
        **(extra or {}),
    }
    (target / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    sign_version(target, signer or Signer())
    if make_current:
        set_current(model_dir, version, signer)
    return version


def _skops_version() -> str:
    from importlib.metadata import version

    return version("skops")


def set_current(model_dir: Path, version: str, signer: Signer | None = None, check: bool = True) -> Pointer:
    """Put `version` in service: CURRENT rewritten atomically, signed with `signer` (default the
    development key) under the next sequence number. `check=False` writes a pointer to a
    version that is not there (a test's broken promotion)."""
    if check and not (model_dir / version / METADATA_FILE).is_file():
        raise ModelError(f"model version {version!r} does not exist in {model_dir}")
    try:
        previous = pointer_sequence((model_dir / CURRENT_FILE).read_text())
    except OSError:
        previous = 0
    pointer = Pointer(version, previous + 1, datetime.now(UTC).isoformat())
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".CURRENT.")
    os.fchmod(fd, 0o644)  # read by the realtime instance, possibly as another user
    with os.fdopen(fd, "w") as fh:
        fh.write(pointer_text(pointer, signer or Signer()))
        fh.flush()
        os.fsync(fh.fileno())  # never an empty CURRENT after a power cut
    os.replace(tmp, model_dir / CURRENT_FILE)
    dir_fd = os.open(model_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return pointer


def _current_text(model_dir: Path) -> str:
    try:
        return (model_dir / CURRENT_FILE).read_text()
    except PermissionError as err:
        raise ModelError(f"cannot read {model_dir / CURRENT_FILE}: {err}") from err
    except FileNotFoundError as err:
        raise ModelError(f"no current model in {model_dir}: train one with `onboarding-train`") from err


def current_version(model_dir: Path) -> str:
    """The version CURRENT names (its first line; the signature is not checked here)."""
    lines = _current_text(model_dir).splitlines()
    return lines[0].strip() if lines else ""


def current_pointer(model_dir: Path, verifier: Verifier) -> Pointer:
    """CURRENT, its signature verified with `verifier` (`ModelIntegrityError` otherwise)."""
    return verify_pointer(_current_text(model_dir), verifier)


def load_model(
    model_dir: Path, version: str, dataset: str | None = None, verifier: Verifier | None = None
) -> LoadedModel:
    """Load a version. With `dataset` (the service's ONBOARDING_DATASET), a version of
    another data set's contract is refused; without, it must fit the contract it names.
    With `verifier` (the service's key), its signed manifest is checked before any file is
    parsed: `ModelIntegrityError` for an unsigned version, another key or a changed file."""
    folder = model_dir / version
    digest = verify_version(folder, verifier) if verifier is not None else content_hash(folder)
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read metadata of model {version!r} in {model_dir}: {err}") from err
    trained_on = metadata.get("dataset", "german_credit")  # versions older than the setting: German
    if dataset is not None and trained_on != dataset:
        raise ModelError(
            f"model {version!r} was trained on the {trained_on} data set, but the service runs with "
            f"ONBOARDING_DATASET={dataset}; train one on {dataset} with `onboarding-train`"
        )
    if trained_on not in DATASETS or metadata.get("features") != feature_schema(trained_on):
        raise ModelError(
            f"model {version!r} was trained on a feature schema that does not match the "
            "signup event schema; retrain it with `onboarding-train`"
        )
    try:
        untrusted = [t for t in sio.get_untrusted_types(file=folder / MODEL_FILE) if t not in TRUSTED_TYPES]
        if untrusted:
            raise ModelError(f"model {version!r} contains types that are not trusted: {untrusted}")
        scorer: Scorer = sio.load(folder / MODEL_FILE, trusted=TRUSTED_TYPES)
    except ModelError:
        raise
    except Exception as err:  # skops raises a variety of errors on a damaged file
        raise ModelError(f"cannot load model {version!r}: {err}") from err
    return LoadedModel(
        version=version,
        scorer=scorer,
        policy=Policy.from_dict(metadata["policy"]),
        metadata=metadata,
        content_hash=digest,
    )


class ModelStore:
    """The current model of a directory, loaded once per process and reloaded on promotion,
    each version verified with `verifier` before it is loaded."""

    def __init__(self, model_dir: Path, dataset: str | None = None, verifier: Verifier | None = None) -> None:
        self.model_dir = model_dir
        self.dataset = dataset
        self.verifier = verifier or Signer().verifier()
        self._lock = threading.Lock()
        self._loaded: LoadedModel | None = None
        self._sequence = 0  # the newest promotion this process has served
        self.loads = 0

    def current(self) -> LoadedModel:
        pointer = current_pointer(self.model_dir, self.verifier)
        version = pointer.version
        with self._lock:
            if pointer.sequence < self._sequence:
                raise ModelIntegrityError(
                    version,
                    f"CURRENT went back to promotion {pointer.sequence} after this process served "
                    f"promotion {self._sequence} (an old CURRENT put back; roll back with `onboarding-model rollback`)",
                )
            self._sequence = pointer.sequence
            if self._loaded is None or self._loaded.version != version:
                self._loaded = load_model(self.model_dir, version, self.dataset, self.verifier)
                self.loads += 1
            return self._loaded


_stores: dict[tuple[Path, str | None, Verifier], ModelStore] = {}


def model_store(model_dir: Path, dataset: str | None = None, verifier: Verifier | None = None) -> ModelStore:
    """The process-wide store for a directory (so a task process reuses a warm model); with
    `dataset`, it serves only versions of that data set's contract; every version it loads
    must be signed with `verifier`'s key (default: the development key)."""
    trusted = verifier or Signer().verifier()
    key = (model_dir.resolve(), dataset, trusted)
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = ModelStore(key[0], dataset, trusted)
    return store


_pinned: dict[tuple[Path, str, str | None, Verifier], LoadedModel] = {}


def pinned_model(
    model_dir: Path, version: str, dataset: str | None = None, verifier: Verifier | None = None
) -> LoadedModel:
    """One named version (not CURRENT's), loaded and verified once per process: the shadow
    challenger (SHADOW_MODEL_VERSION) the task scores beside the champion."""
    trusted = verifier or Signer().verifier()
    key = (model_dir.resolve(), version, dataset, trusted)
    if key not in _pinned:
        _pinned[key] = load_model(key[0], version, dataset, trusted)
    return _pinned[key]
