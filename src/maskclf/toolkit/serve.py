"""`maskclf serve`: an upload page and a JSON API (FastAPI + uvicorn) over a FacePipeline; every asset is local."""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import swagger_ui_bundle
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException

from maskclf import __version__
from maskclf.faces.detect import ImageRefused, load_rgb
from maskclf.inference.detect import FacePipeline, load_pipeline
from maskclf.inference.onnx_model import OnnxModel

PAGE = resources.files("maskclf") / "resources" / "serve"
# Decodable formats the API accepts (PIL format names); anything else is refused as not an image.
FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO"}


@dataclass(frozen=True)
class Limits:
    """What the web app accepts: upload bytes, decoded pixels, faces per photo."""

    max_bytes: int = 10 * 1024 * 1024  # upload size (the whole multipart body)
    max_pixels: int = 40_000_000  # width x height of the decoded image
    max_faces: int = 50


class ApiError(Exception):
    """A request the API refuses: HTTP status and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class LimitBody:
    """ASGI wrapper: refuse bodies over `max_bytes` by Content-Length up front, and count streamed bytes."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            message = f"upload of {int(length)} bytes exceeds the limit of {self.max_bytes} bytes"
            return await json_response(scope, receive, send, 413, message)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ApiError(413, f"upload exceeds the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)


async def json_response(scope, receive, send, status: int, message: str) -> None:
    await JSONResponse({"error": message, "status": status}, status_code=status)(scope, receive, send)


def decode_upload(data: bytes, content_type: str, filename: str, limits: Limits):
    """The RGB array of an uploaded image, or ApiError (415 not an image type, 413 too many pixels, 422 broken)."""
    if not content_type.startswith("image/"):
        raise ApiError(415, f"'{filename}' was sent as {content_type or 'no content type'}; only image/* uploads "
                            f"are accepted")
    if not data:
        raise ApiError(422, f"'{filename}' is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format, im.size
    except Exception:  # PIL raises several types for data it cannot identify
        raise ApiError(422, f"'{filename}' is not a decodable image (JPEG, PNG, WebP, BMP, GIF or TIFF)") from None
    if fmt not in FORMATS:
        raise ApiError(415, f"'{filename}' is a {fmt} image; accepted formats: {sorted(FORMATS)}")
    if w * h > limits.max_pixels:
        raise ApiError(413, f"'{filename}' has {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels}")
    try:
        return load_rgb(io.BytesIO(data), draft=False)
    except ImageRefused as exc:
        raise ApiError(422, f"'{filename}': {exc}") from None
    except Exception as exc:
        raise ApiError(422, f"'{filename}' is a broken {fmt} file ({type(exc).__name__}: {exc})") from None


def create_app(pipe: FacePipeline, limits: Limits = Limits()):
    """The web app: `/` upload page, `POST /api/detect`, `GET /health`, OpenAPI docs at `/docs`."""
    app = FastAPI(title="maskclf", version=__version__, docs_url=None, redoc_url=None,
                  description="Find faces in a photo and classify mask status, gender and age group.")
    app.mount("/static", StaticFiles(directory=str(PAGE)), name="static")
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message, "status": exc.status}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail), "status": exc.status_code}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": f"invalid request: {exc.errors()}", "status": 422}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        return JSONResponse({"error": f"internal error ({type(exc).__name__})", "status": 500}, status_code=500)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(PAGE / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="maskclf API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    @app.get("/health", summary="liveness and the model being served")
    def health():
        return {"status": "ok", "version": __version__, "model": pipe.model.path.name,
                "backend": "onnxruntime" if isinstance(pipe.model, OnnxModel) else "torch",
                "detector": pipe.prepare.detector, "max_upload_bytes": limits.max_bytes,
                "max_pixels": limits.max_pixels}

    @app.post("/api/detect", summary="faces and labels of one uploaded photo (multipart field `file`)",
              openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["file"],
                  "properties": {"file": {"type": "string", "format": "binary"}}}}}}})
    async def api_detect(request: Request):
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(415, "send the photo as multipart/form-data with a `file` field, got "
                                f"{request.headers.get('content-type') or 'no content type'}")
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "no file in the `file` field of the form")
        data = await upload.read()
        name = upload.filename or "upload"
        img = await run_in_threadpool(decode_upload, data, upload.content_type or "", name, limits)
        faces = await run_in_threadpool(pipe.faces, img, 0.0, limits.max_faces)
        return {"filename": name, "width": img.shape[1], "height": img.shape[0], "faces": faces}

    return LimitBody(app, limits.max_bytes)


def serve(model: Path, host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits(),
          device: str = "auto", threads: int | None = 1) -> None:
    """Load the model once and serve the app until interrupted."""
    import uvicorn

    app = create_app(load_pipeline(model, device, threads=threads), limits)
    print(f"maskclf serving {model} on http://{host}:{port}/ (API docs: /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
