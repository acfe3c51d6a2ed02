"""The WaveSpeed simulator's uploads: the SDK's ticket flow (``POST /api/v3/media/uploads``, then ``PUT``
to the returned slot URL, which needs no auth like a presigned URL), the legacy multipart
``POST /api/v3/media/upload/binary``, and ``GET`` of an uploaded file (inputs may reference it by URL)."""

from __future__ import annotations

import email.policy
import json
import os
import re
import secrets
import uuid
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from evalkit.sim.wavespeed.schema import _is_int
from evalkit.sim.wavespeed.state import MAX_BODY_BYTES, SimState, Upload

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_filename(name: Any) -> str:
    base = os.path.basename(str(name or "")).strip() or "upload"
    return _SAFE_NAME.sub("_", base)[:120] or "upload"


class UploadRoutes:
    """Mixed into :class:`~evalkit.sim.wavespeed.app.WaveSpeedSim`: the upload routes."""

    _state: SimState

    if TYPE_CHECKING:

        async def _slow(self, kind: str, model_keys: tuple[str, ...]) -> None: ...

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse: ...

        @staticmethod
        def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse: ...

    # ---- uploads --------------------------------------------------------------------------------
    def _upload_data(self, base_url: str, upload_id: str, u: Upload, size: int) -> dict[str, Any]:
        kind = u.content_type.split("/")[0]
        return {
            "type": kind if kind in ("image", "video", "audio") else "file",
            "download_url": f"{base_url}/_sim/uploads/{upload_id}/{u.filename}",
            "filename": u.filename,
            "size": size,
        }

    async def _upload_ticket(self, request: Request) -> Response:
        st = self._state
        st.counts["upload"] += 1
        await self._slow("upload", ())
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or not body.get("filename"):
            return self._error(400, "body must be a JSON object with 'filename' (and 'size', 'content_type')")
        filename = _safe_filename(body.get("filename"))
        ctype = str(body.get("content_type") or "application/octet-stream")
        upload_id, token = uuid.uuid4().hex, secrets.token_hex(16)
        u = Upload(filename, ctype)
        st.uploads[upload_id] = u
        st.upload_slots[token] = upload_id
        base_url = f"{request.url.scheme}://{request.url.netloc}"
        size = int(body["size"]) if _is_int(body.get("size")) else 0
        data = self._upload_data(base_url, upload_id, u, size)
        data["upload"] = {
            "method": "PUT",
            "url": f"{base_url}/_sim/upload-slots/{token}",
            "headers": {"Content-Type": ctype},
        }
        return self._json({"code": 200, "message": "success", "data": data})

    async def _put_upload(self, request: Request) -> Response:
        st = self._state
        st.counts["upload"] += 1
        await self._slow("upload", ())
        upload_id = st.upload_slots.pop(request.path_params["token"], None)
        if upload_id is None or upload_id not in st.uploads:
            return Response(b"no such upload slot (or already used)", status_code=404, media_type="text/plain")
        data = await request.body()
        if len(data) > MAX_BODY_BYTES:
            return Response(b"upload too large", status_code=413, media_type="text/plain")
        st.uploads[upload_id].data = data
        return Response(b"", status_code=200)

    async def _upload_binary(self, request: Request) -> Response:
        st = self._state
        st.counts["upload"] += 1
        await self._slow("upload", ())
        ctype = request.headers.get("content-type", "")
        raw = await request.body()
        if not ctype.lower().startswith("multipart/form-data") or len(raw) > MAX_BODY_BYTES:
            return self._error(400, "send the file as multipart/form-data in the field 'file'")
        msg = BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + raw
        )
        part = (
            next((p for p in msg.iter_parts() if p.get_param("name", header="content-disposition") == "file"), None)
            if msg.is_multipart()
            else None
        )
        data = part.get_payload(decode=True) if part is not None else None
        if part is None or not isinstance(data, bytes) or not data:
            return self._error(400, "multipart field 'file' is missing or empty")
        u = Upload(_safe_filename(part.get_filename()), part.get_content_type(), data)
        upload_id = uuid.uuid4().hex
        st.uploads[upload_id] = u
        base_url = f"{request.url.scheme}://{request.url.netloc}"
        return self._json(
            {"code": 200, "message": "success", "data": self._upload_data(base_url, upload_id, u, len(data))}
        )

    async def _get_upload(self, request: Request) -> Response:
        st = self._state
        st.counts["upload_get"] += 1
        u = st.uploads.get(request.path_params["upload_id"])
        if u is None or u.data is None or u.filename != request.path_params["filename"]:
            return self._error(404, "no such file")
        return Response(u.data, media_type=u.content_type)
