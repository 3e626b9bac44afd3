"""Where trial checkpoints live: one file per trial lineage in an fsspec file system.

A trial that is re-run (its worker died, the service restarted, it was preempted) keeps
the checkpoint of the attempt before it, so the store is keyed by the *lineage*: the number
of the first attempt of the configuration. Paths are
``<root>/study-<id>/trial-<lineage>.pt``; the root is any fsspec URL: a local directory
(the embedded default, or an NFS mount shared by the nodes) or an object store such as
``s3://bucket/prefix``.

A reader never sees half a file: on a local (or mounted) file system a checkpoint is
written to a temporary name in the same directory and renamed over the old one (a rename
is atomic there); an object store publishes an object only once its upload completed.

The store moves bytes only and imports no torch, so the service (download, retention)
uses it without the training stack; the file's format is ``workers.checkpoint_format``.
"""

from __future__ import annotations

import contextlib
import errno
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import fsspec
from fsspec.implementations.local import LocalFileSystem

if TYPE_CHECKING:
    from workers.checkpoint_format import Checkpoint


class CheckpointStoreError(RuntimeError):
    """The checkpoint store is full, unreachable or refused a write: the trial fails and is
    re-run (it is not the configuration's fault), with a message saying what to fix."""


class CheckpointStore:
    """One checkpoint root (``url``); cheap to build, safe to use from several threads."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as err:
            raise CheckpointStoreError(
                f"cannot use the checkpoint store {url!r}: {err} "
                "(check ADAMP_TUNE_CHECKPOINT_URL; s3:// needs the s3fs package)"
            ) from err
        self.root = root.rstrip("/")
        self._local = isinstance(self.fs, LocalFileSystem)

    def study_dir(self, study_id: int) -> str:
        return f"{self.root}/study-{int(study_id)}"

    def path(self, study_id: int, lineage: int) -> str:
        """Where the checkpoint of trial ``lineage`` (its first attempt's number) lives."""
        return f"{self.study_dir(study_id)}/trial-{int(lineage)}.pt"

    # ----------------------------------------------------------------- write / read

    def save(self, study_id: int, lineage: int, data: bytes) -> None:
        """Replace the lineage's checkpoint with ``data``, atomically."""
        target = self.path(study_id, lineage)
        try:
            if self._local:
                self.fs.makedirs(self.study_dir(study_id), exist_ok=True)
                temporary = f"{target}.tmp-{uuid.uuid4().hex}"
                try:
                    with self.fs.open(temporary, "wb") as out:
                        out.write(data)
                    self.fs.mv(temporary, target)
                finally:
                    if self.fs.exists(temporary):
                        self.fs.rm(temporary)
            else:
                self.fs.pipe_file(target, data)
        except Exception as err:  # OSError, or a client error of an object store's library
            raise CheckpointStoreError(self._explain("write", target, err)) from err

    def load_bytes(self, study_id: int, lineage: int) -> bytes | None:
        """The lineage's checkpoint file, or ``None`` when it saved none."""
        target = self.path(study_id, lineage)
        try:
            data: bytes = self.fs.cat_file(target)
        except FileNotFoundError:
            return None
        except Exception as err:  # OSError, or a client error of an object store's library
            raise CheckpointStoreError(self._explain("read", target, err)) from err
        return data

    def chunks(self, study_id: int, lineage: int, chunk: int = 1 << 20) -> Iterator[bytes] | None:
        """The lineage's checkpoint file in pieces (a download never holds it whole), or
        ``None`` when there is none."""
        target = self.path(study_id, lineage)
        try:
            handle = self.fs.open(target, "rb")
        except FileNotFoundError:
            return None
        except Exception as err:
            raise CheckpointStoreError(self._explain("read", target, err)) from err

        def read() -> Iterator[bytes]:
            with handle:
                while piece := handle.read(chunk):
                    yield piece

        return read()

    def load(self, study_id: int, lineage: int, *, weights_only: bool = True) -> Checkpoint | None:
        """The lineage's checkpoint, decoded (on a worker: this needs torch)."""
        from workers.checkpoint_format import decode  # noqa: PLC0415 - torch, workers only

        data = self.load_bytes(study_id, lineage)
        return None if data is None else decode(data, weights_only=weights_only)

    def size(self, study_id: int, lineage: int) -> int | None:
        """Bytes of the lineage's checkpoint, ``None`` when there is none."""
        self.fs.invalidate_cache()
        try:
            return int(self.fs.size(self.path(study_id, lineage)))
        except FileNotFoundError:
            return None

    # ----------------------------------------------------------------- clean-up

    def lineages(self, study_id: int) -> list[int]:
        """Trial lineages of a study that have a checkpoint."""
        self.fs.invalidate_cache()  # others write to the store: never list from a cache
        try:
            names = self.fs.ls(self.study_dir(study_id), detail=False)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            base = str(name).rstrip("/").rsplit("/", 1)[-1]
            if base.startswith("trial-") and base.endswith(".pt"):
                found.append(int(base[len("trial-") : -len(".pt")]))
        return sorted(found)

    def studies(self) -> list[int]:
        """Studies that have a folder in the store."""
        self.fs.invalidate_cache()
        try:
            names = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            base = str(name).rstrip("/").rsplit("/", 1)[-1]
            if base.startswith("study-") and base[len("study-") :].isdigit():
                found.append(int(base[len("study-") :]))
        return sorted(found)

    def delete(self, study_id: int, lineage: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(study_id, lineage))  # no glob expansion of the path

    def delete_study(self, study_id: int) -> None:
        """Remove every checkpoint of a study (it was deleted)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.study_dir(study_id), recursive=True)

    def _explain(self, action: str, target: str, err: Exception) -> str:
        if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            why = "the store is full; free space or lower the retention"
        else:
            why = "the store is unreachable or refused it"
        return (
            f"could not {action} checkpoint {target} in {self.url}: {why} "
            f"({type(err).__name__}: {err}); check ADAMP_TUNE_CHECKPOINT_URL"
        )
