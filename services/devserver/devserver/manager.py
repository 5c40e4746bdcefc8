"""Which versions of which models are loaded, found from numeric folders under base paths.

Mirrors TF Serving's file-system source and manager for what the server needs: the
version policy picks the aspired versions, new ones are loaded (and warmed up) before
they become AVAILABLE, dropped ones go to END, and lookups by ModelSpec fail with the
same codes and messages as `ServerCore::GetServableHandle`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.contract import version_dirs
from tensorflow_serving.apis import model_pb2

from devserver.errors import InvalidArgument, NotFound
from devserver.servable import LoadError, Servable
from devserver.settings import ModelConfig

log = logging.getLogger("devserver.manager")

Loader = Callable[[ModelConfig, int, Path], Servable]


class StartupError(RuntimeError):
    """The configured models could not all be made available."""


@dataclass(frozen=True)
class VersionState:
    """A version's state as GetModelStatus reports it."""

    state: str  # LOADING, AVAILABLE or END
    error_code: str = "OK"
    error_message: str = ""


def numeric_versions(base_path: Path) -> list[int]:
    """The version numbers of the folders directly under a base path (OSError if unreadable)."""
    return [int(child.name) for child in version_dirs(base_path)]


class ServableManager:
    """Loads, serves and unloads model versions; answers lookups by ModelSpec."""

    def __init__(
        self,
        models: tuple[ModelConfig, ...],
        loader: Loader,
        *,
        allow_labels_for_unavailable: bool = False,
    ) -> None:
        self._models = {model.name: model for model in models}
        self._allow_labels_for_unavailable = allow_labels_for_unavailable
        self._loader = loader
        self._lock = threading.Lock()
        self._available: dict[str, dict[int, Servable]] = {m.name: {} for m in models}
        self._states: dict[str, dict[int, VersionState]] = {m.name: {} for m in models}
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- loading ---------------------------------------------------------------------------

    def load_initial(self) -> None:
        """Load every aspired version of every model; fail if any model ends up with none."""
        self._check_initial_labels()
        for model in self._models.values():
            if not model.base_path.is_dir():
                raise StartupError(
                    f"Could not find base path {model.base_path} for servable {model.name}"
                )
            errors = self._sync_model(model)
            if errors:
                raise StartupError(errors[0])
            if not self._available[model.name]:
                raise StartupError(
                    f"No versions of servable {model.name} found under base path {model.base_path}"
                )

    def _check_initial_labels(self) -> None:
        """Refuse start-up labels the way TF Serving does without the allowing flag.

        TF Serving's ServerCore::ReloadConfig assigns the labels (UpdateModelVersionLabelMap)
        before it adds the models, so on the first config no version is available yet and
        every label fails unless --allow_version_labels_for_unavailable_models is set
        (tensorflow/serving model_servers/server_core.cc; tensorflow/serving#1230, #1608).
        """
        if self._allow_labels_for_unavailable:
            return
        for model in self._models.values():
            for _label, version in sorted(model.version_labels.items()):
                raise StartupError(
                    f"FAILED_PRECONDITION: Request to assign label to version {version} of "
                    f"model {model.name}, which is not currently available for inference"
                )

    def poll_forever(self, interval_seconds: float) -> None:
        """Re-scan the base paths every interval in a daemon thread, like TF Serving."""
        if interval_seconds <= 0:
            return

        def loop() -> None:
            last_problem: dict[str, str] = {}
            while not self._stop.wait(interval_seconds):
                for model in self._models.values():
                    try:
                        problem = "; ".join(self._sync_model(model))
                    except OSError as err:
                        problem = f"cannot scan {model.base_path}: {err.strerror}"
                    # Report a problem once, not on every poll.
                    if problem and problem != last_problem.get(model.name):
                        log.error("%s", problem)
                    last_problem[model.name] = problem

        self._poller = threading.Thread(target=loop, name="devserver-fs-poll", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def _sync_model(self, model: ModelConfig) -> list[str]:
        """Bring one model's loaded versions in line with its base path; return load errors."""
        with self._sync_lock:
            aspired = model.policy.aspired(numeric_versions(model.base_path))
            errors = []
            for version in aspired:
                if version in self._available[model.name]:
                    continue
                errors.extend(self._load(model, version))
            # New versions are served before old ones go, as AvailabilityPreservingPolicy does.
            for version in list(self._available[model.name]):
                if version not in aspired:
                    with self._lock:
                        del self._available[model.name][version]
                        self._states[model.name][version] = VersionState("END")
                    log.info(
                        "Unloaded servable version {name: %s version: %d}", model.name, version
                    )
            return errors

    def _load(self, model: ModelConfig, version: int) -> list[str]:
        with self._lock:
            self._states[model.name][version] = VersionState("LOADING")
        try:
            servable = self._loader(model, version, model.base_path / str(version))
        except (LoadError, OSError) as err:
            message = str(err)
            with self._lock:
                self._states[model.name][version] = VersionState("END", "UNKNOWN", message)
            return [message]
        with self._lock:
            self._available[model.name][version] = servable
            self._states[model.name][version] = VersionState("AVAILABLE")
        log.info("Successfully loaded servable version %r", servable)
        return []

    # -- lookups ---------------------------------------------------------------------------

    def resolve(self, spec: model_pb2.ModelSpec) -> Servable:
        """The servable a ModelSpec asks for (latest when no version or label is given)."""
        if not spec.name:
            raise InvalidArgument("ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            return self.specific(spec.name, self.version_for_label(spec.name, spec.version_label))
        if choice == "version":
            return self.specific(spec.name, spec.version.value)
        with self._lock:
            versions = self._available.get(spec.name)
            if versions:
                return versions[max(versions)]
        raise NotFound(f"Servable not found for request: Latest({spec.name})")

    def specific(self, name: str, version: int) -> Servable:
        """One exact version, or NOT_FOUND the way TF Serving words it."""
        with self._lock:
            servable = self._available.get(name, {}).get(version)
        if servable is None:
            raise NotFound(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def version_for_label(self, name: str, label: str) -> int:
        """The version a label points at; labels come only from --model_config_file.

        As in TF Serving, a label may point at a version that is not loaded (allowed by
        --allow_version_labels_for_unavailable_models): requests by it then get NOT_FOUND
        for that specific version. `stable` and `canary` mean nothing unless configured
        (server_core.h's comment saying otherwise describes no code).
        """
        model = self._models.get(name)
        if model is None or label not in model.version_labels:
            raise InvalidArgument(f"Unrecognized servable version label: {label}")
        return model.version_labels[label]

    def version_states(self, name: str) -> dict[int, VersionState]:
        """Every version of a model seen so far with its state, newest first."""
        with self._lock:
            states = dict(self._states.get(name, {}))
        return dict(sorted(states.items(), reverse=True))

    def available(self) -> list[Servable]:
        """Every servable currently AVAILABLE, by model name then version."""
        with self._lock:
            return [
                servable
                for name in sorted(self._available)
                for _, servable in sorted(self._available[name].items())
            ]
