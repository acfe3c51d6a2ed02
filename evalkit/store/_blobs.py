"""Content-addressed files: every image (inputs and outputs) under ``blobs/ab/<sha256>.<ext>``.

A blob is written to a temporary file, fsynced and renamed into place, so a name in ``blobs/`` always
holds complete bytes; the spool holds outputs being downloaded until they are moved in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import InvalidInputError, WorkspaceError
from evalkit.store._db import Connection, check_id, translate_error


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    ext: str
    path: Path


class BlobsMixin(Connection):
    """Blob store and spool folders of a workspace."""

    def blob_path(self, sha256: str, ext: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256 or "") or not re.fullmatch(r"[a-z0-9]{1,5}", ext or ""):
            raise InvalidInputError(f"not a blob reference: {sha256!r}.{ext!r}")
        return self.path / "blobs" / sha256[:2] / f"{sha256}.{ext}"

    def find_blob(self, sha256: str) -> Path | None:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
            return None
        folder = self.path / "blobs" / sha256[:2]
        for p in folder.glob(f"{sha256}.*") if folder.is_dir() else ():
            return p
        return None

    def put_blob(self, data: bytes, ext: str) -> BlobRef:
        """Store bytes under their sha256 (atomically; a no-op when already present)."""
        sha = hashlib.sha256(data).hexdigest()
        final = self.blob_path(sha, ext)
        if final.exists():
            return BlobRef(sha, ext, final)
        tmp = self._tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise translate_error(exc, self.path) from None
        return BlobRef(sha, ext, final)

    def put_blob_file(self, path: str | os.PathLike, ext: str, sha256: str | None = None) -> BlobRef:
        """Move a finished file (e.g. a spooled download) into the blob store."""
        src = Path(path)
        if sha256 is None:
            h = hashlib.sha256()
            with open(src, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            sha256 = h.hexdigest()
        final = self.blob_path(sha256, ext)
        try:
            if final.exists():
                src.unlink(missing_ok=True)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                with open(src, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(src, final)
        except OSError as exc:
            raise translate_error(exc, self.path) from None
        return BlobRef(sha256, ext, final)

    def read_blob(self, sha256: str) -> bytes:
        p = self.find_blob(sha256)
        if p is None:
            raise WorkspaceError(f"image {sha256[:12]}… is missing from {self.path / 'blobs'}")
        return p.read_bytes()

    @property
    def spool_dir(self) -> Path:
        return self.path / "spool"

    @property
    def _tmp_dir(self) -> Path:
        """Where blobs are written before being renamed into place (same filesystem as blobs/)."""
        d = self.spool_dir / ".tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _clean_stale_temp_files(self, older_than_s: float = 3600.0) -> None:
        """Half-written blobs left by a killed process (a live writer finishes in seconds)."""
        d = self.spool_dir / ".tmp"
        if not d.is_dir():
            return
        cutoff = time.time() - older_than_s
        for p in d.glob("*.part"):
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()

    def run_spool(self, run_id: str, *, clean: bool = False) -> Path:
        """The run's spool folder; ``clean`` removes half-downloaded files left by a crash (call it under
        the run lock — their calls are polled again on resume)."""
        d = self.spool_dir / check_id(run_id, "run id")
        if clean:
            shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True, exist_ok=True)
        return d
