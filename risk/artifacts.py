"""Versioned model artifacts: a skops file plus metadata, and a `current` pointer.

Layout of a model directory:

    <model_dir>/<version>/model.skops      the fitted Pipeline (skops: loading runs no code)
    <model_dir>/<version>/metadata.json    version, data hash, library versions, features,
                                           metrics, policy thresholds
    <model_dir>/CURRENT                    the version in service

A new version becomes current by an atomic rename of CURRENT, so a reader sees the old
version or the new one, never half of either. `ModelStore.current()` caches the loaded model
per process and reloads only when CURRENT names another version.
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

from risk.errors import ModelError
from risk.model import feature_schema
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
    pipeline: Pipeline
    policy: Policy
    metadata: dict[str, Any]


def save_model(
    model_dir: Path,
    pipeline: Pipeline,
    policy: Policy,
    data_sha256: str,
    metrics: dict[str, Any],
    make_current: bool = True,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write a new version and (by default) make it current. Returns the version."""
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
    if make_current:
        set_current(model_dir, version)
    return version


def _skops_version() -> str:
    from importlib.metadata import version

    return version("skops")


def set_current(model_dir: Path, version: str) -> None:
    if not (model_dir / version / METADATA_FILE).is_file():
        raise ModelError(f"model version {version!r} does not exist in {model_dir}")
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".CURRENT.")
    os.fchmod(fd, 0o644)  # read by the realtime instance, possibly as another user
    with os.fdopen(fd, "w") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())  # never an empty CURRENT after a power cut
    os.replace(tmp, model_dir / CURRENT_FILE)
    dir_fd = os.open(model_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def current_version(model_dir: Path) -> str:
    try:
        return (model_dir / CURRENT_FILE).read_text().strip()
    except PermissionError as err:
        raise ModelError(f"cannot read {model_dir / CURRENT_FILE}: {err}") from err
    except FileNotFoundError as err:
        raise ModelError(f"no current model in {model_dir}: train one with `onboarding-train`") from err


def load_model(model_dir: Path, version: str) -> LoadedModel:
    folder = model_dir / version
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read metadata of model {version!r} in {model_dir}: {err}") from err
    if metadata.get("features") != feature_schema():
        raise ModelError(
            f"model {version!r} was trained on a feature schema that does not match the "
            "signup event schema; retrain it with `onboarding-train`"
        )
    try:
        untrusted = [t for t in sio.get_untrusted_types(file=folder / MODEL_FILE) if t not in TRUSTED_TYPES]
        if untrusted:
            raise ModelError(f"model {version!r} contains types that are not trusted: {untrusted}")
        pipeline = sio.load(folder / MODEL_FILE, trusted=TRUSTED_TYPES)
    except ModelError:
        raise
    except Exception as err:  # skops raises a variety of errors on a damaged file
        raise ModelError(f"cannot load model {version!r}: {err}") from err
    return LoadedModel(
        version=version,
        pipeline=pipeline,
        policy=Policy.from_dict(metadata["policy"]),
        metadata=metadata,
    )


class ModelStore:
    """The current model of a directory, loaded once per process and reloaded on promotion."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._lock = threading.Lock()
        self._loaded: LoadedModel | None = None
        self.loads = 0

    def current(self) -> LoadedModel:
        version = current_version(self.model_dir)
        with self._lock:
            if self._loaded is None or self._loaded.version != version:
                self._loaded = load_model(self.model_dir, version)
                self.loads += 1
            return self._loaded


_stores: dict[Path, ModelStore] = {}


def model_store(model_dir: Path) -> ModelStore:
    """The process-wide store for a directory (so a task process reuses a warm model)."""
    key = model_dir.resolve()
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = ModelStore(key)
    return store
