"""Page previews for the signer's approval page: each page rendered to PNG by poppler's pdftoppm, safely and bounded.

A document to be signed comes from an agency and is shown to a citizen before they approve it (issue 13: "a
rendered preview of every page (rendered safely and bounded)"). A PDF is a program for a renderer; a hostile one
can ask for a page of 200 x 200 inches at any resolution, a content stream that inflates to gigabytes (a
decompression bomb) or an endless loop of drawing operators. So rendering never happens in the service's process
and every resource it may use has a bound, each a field of `PreviewPolicy`:

- a separate process per page (poppler's pdftoppm, Debian poppler-utils), run through util-linux prlimit with
  RLIMIT_AS (address space: a bomb or a huge bitmap fails its allocation instead of growing the worker) and
  RLIMIT_CPU (the kernel stops a renderer that loops), and a wall-clock timeout after which it is killed;
- a pixel bound whatever the page's size: `-scale-to` renders the page's longer side at exactly `max_side`
  pixels, so the bitmap is at most max_side x max_side; poppler answers a bitmap it cannot allocate with a 1x1
  image, so an image whose longer side is not `max_side` is refused too;
- a page-count bound (`max_pages`) checked before anything is rendered, a bound on the PNG's size read back (the
  pipe is read up to `max_png_bytes` and the renderer killed past it), and at most `concurrency` renderers at once;
- no inherited environment (no secret reaches the renderer) and a private temporary directory for the input.

Failures are `PreviewError`s with a machine `code`: `preview_limit_exceeded` (a bound stopped the renderer: time,
CPU, memory or output), `preview_too_many_pages`, `preview_failed` (poppler could not render the page) and
`preview_unavailable` (pdftoppm or prlimit is not installed; the deployment's fault, answered 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import struct
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

from signing.core.errors import SigningError

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_STDERR_KEPT = 2000
_PAGES = re.compile(rb"^Pages:\s+(\d+)\s*$", re.MULTILINE)
_READ_CHUNK = 64 * 1024


class PreviewError(SigningError):
    """A page preview could not be made."""

    code: ClassVar[str] = "preview_failed"
    status_code: ClassVar[int] = 422
    title: ClassVar[str] = "The page could not be shown"


class PreviewLimitExceeded(PreviewError):
    """A bound of the PreviewPolicy stopped the renderer (time, CPU, memory, output size or pixels)."""

    code: ClassVar[str] = "preview_limit_exceeded"
    title: ClassVar[str] = "The page is too costly to show"


class PreviewTooManyPages(PreviewError):
    code: ClassVar[str] = "preview_too_many_pages"
    title: ClassVar[str] = "The document has too many pages to show"


class PreviewUnavailable(PreviewError):
    """pdftoppm, pdfinfo or prlimit is missing: a deployment error (Debian packages poppler-utils, util-linux)."""

    code: ClassVar[str] = "preview_unavailable"
    status_code: ClassVar[int] = 503
    title: ClassVar[str] = "Page previews are not available"


@dataclass(frozen=True, slots=True)
class PreviewPolicy:
    """The bounds of one page's rendering (see the module docstring)."""

    max_side: int = 1400
    """Pixels of a page's longer side: A4 at about 120 dpi; the bitmap is never larger than max_side squared."""
    max_pages: int = 500
    """Documents with more pages get no preview (the input policy's default page limit)."""
    timeout_seconds: float = 30.0
    """Wall clock per page, after which the renderer is killed."""
    cpu_seconds: int = 20
    """RLIMIT_CPU of the renderer (the kernel sends SIGXCPU, then SIGKILL)."""
    memory_bytes: int = 512 * 1024 * 1024
    """RLIMIT_AS of the renderer: its whole address space, libraries included."""
    max_png_bytes: int = 16 * 1024 * 1024
    """A page's PNG larger than this is refused (a max_side page is a few hundred KiB)."""
    concurrency: int = 2
    """Renderers one PreviewRenderer runs at once (per process); more pages wait their turn, so a signer's browser
    fetching many previews cannot take every core or memory_bytes times as many."""

    def __post_init__(self) -> None:
        if not (16 <= self.max_side <= 10_000 and self.max_pages > 0 and self.timeout_seconds > 0
                and self.cpu_seconds > 0 and self.memory_bytes >= 32 * 1024 * 1024 and self.max_png_bytes > 0):
            raise ValueError("a preview policy needs positive bounds, 16 to 10000 pixels and at least 32 MiB")


@dataclass(frozen=True, slots=True)
class PagePreview:
    """One page rendered: PNG bytes and the image's size in pixels."""

    page: int
    """1-based."""
    png: bytes
    width: int
    height: int


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (PNG specification, ISO/IEC 15948 section 11.2.2), or None when
    `data` does not start like a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


class PreviewRenderer:
    """Renders pages with pdftoppm under a PreviewPolicy. The executables are found once (PATH of the service)."""

    def __init__(self, policy: PreviewPolicy, *, pdftoppm: str | None = None, pdfinfo: str | None = None,
                 prlimit: str | None = None) -> None:
        self.policy = policy
        self._pdftoppm = pdftoppm or shutil.which("pdftoppm")
        self._pdfinfo = pdfinfo or shutil.which("pdfinfo")
        self._prlimit = prlimit or shutil.which("prlimit")
        self._slots = asyncio.Semaphore(policy.concurrency)

    # --- entry points ------------------------------------------------------------------------------------

    async def page_count(self, pdf: bytes) -> int:
        """The document's page count, read by poppler's pdfinfo under the same bounds."""
        async with _input_file(pdf) as path:
            return await self._page_count(path)

    async def render_page(self, pdf: bytes, page: int, *, pages: int) -> PagePreview:
        """Page `page` (1-based) of a document of `pages` pages (the inspected count)."""
        self._check_pages(pages)
        if not 1 <= page <= pages:
            raise PreviewError(f"the document has no page {page}")
        async with _input_file(pdf) as path:
            return await self._render(path, page)

    async def render_document(self, pdf: bytes, *, pages: int | None = None) -> tuple[PagePreview, ...]:
        """Every page, one bounded renderer each, in order; the page count is read with pdfinfo when not given."""
        async with _input_file(pdf) as path:
            count = pages if pages is not None else await self._page_count(path)
            self._check_pages(count)
            return tuple([await self._render(path, page) for page in range(1, count + 1)])

    # --- the renderer --------------------------------------------------------------------------------------

    def _check_pages(self, pages: int) -> None:
        if pages < 1:
            raise PreviewError("the document has no pages")
        if pages > self.policy.max_pages:
            raise PreviewTooManyPages(f"the document has {pages} pages; previews are shown for at most "
                                      f"{self.policy.max_pages}")

    async def _page_count(self, path: Path) -> int:
        if self._pdfinfo is None:
            raise PreviewUnavailable("pdfinfo (Debian poppler-utils) is not installed")
        out, _ = await self._run([self._pdfinfo, str(path)], what="the page count")
        found = _PAGES.search(out)
        if found is None:
            raise PreviewError("the document's pages could not be counted")
        return int(found.group(1))

    async def _render(self, path: Path, page: int) -> PagePreview:
        if self._pdftoppm is None:
            raise PreviewUnavailable("pdftoppm (Debian poppler-utils) is not installed")
        side = self.policy.max_side
        png, _ = await self._run([self._pdftoppm, "-png", "-singlefile", "-f", str(page), "-l", str(page),
                                  "-scale-to", str(side), str(path)], what=f"page {page}")
        size = png_size(png)
        if size is None:
            raise PreviewError(f"page {page} could not be rendered")
        width, height = size
        if max(width, height) != side or min(width, height) < 1:
            # poppler answers a bitmap it could not allocate with a 1x1 image, exit status 0
            raise PreviewLimitExceeded(f"page {page} could not be rendered within {side} x {side} pixels")
        return PagePreview(page=page, png=png, width=width, height=height)

    async def _run(self, argv: Sequence[str], *, what: str) -> tuple[bytes, bytes]:
        """Run one poppler tool under prlimit; its stdout (at most max_png_bytes) and the start of its stderr."""
        if self._prlimit is None:
            raise PreviewUnavailable("prlimit (Debian util-linux) is not installed")
        policy = self.policy
        command = [self._prlimit, f"--as={policy.memory_bytes}", f"--cpu={policy.cpu_seconds}", "--core=0", "--",
                   *argv]
        async with self._slots:
            return await self._run_bounded(command, what=what)

    async def _run_bounded(self, command: Sequence[str], *, what: str) -> tuple[bytes, bytes]:
        policy = self.policy
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={"PATH": os.defpath, "LC_ALL": "C"}, start_new_session=True)
        assert process.stdout is not None  # noqa: S101 - PIPE above
        assert process.stderr is not None  # noqa: S101 - PIPE above
        try:
            out, err = await asyncio.wait_for(asyncio.gather(
                _read_bounded(process.stdout, policy.max_png_bytes, process), _read_start(process.stderr)),
                timeout=policy.timeout_seconds)
            status = await asyncio.wait_for(process.wait(), timeout=policy.timeout_seconds)
        except TimeoutError:
            raise PreviewLimitExceeded(f"rendering {what} took longer than {policy.timeout_seconds:g} seconds and "
                                       "was stopped") from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if out is None:
            raise PreviewLimitExceeded(f"{what} rendered to more than {policy.max_png_bytes} bytes and was stopped")
        if status in (-signal.SIGXCPU, -signal.SIGKILL):
            raise PreviewLimitExceeded(f"rendering {what} used more than {policy.cpu_seconds} seconds of CPU time "
                                       "and was stopped")
        if status != 0:
            message = err.decode("utf-8", "replace")
            if "alloc" in message.lower() or "memory" in message.lower() or status == -signal.SIGSEGV:
                raise PreviewLimitExceeded(f"rendering {what} needed more than {policy.memory_bytes} bytes of "
                                           "memory and was stopped")
            raise PreviewError(f"{what} could not be rendered")
        return out, err


async def _read_bounded(stream: asyncio.StreamReader, limit: int, process: asyncio.subprocess.Process) -> bytes | None:
    """Everything `stream` gives up to `limit` bytes, or None when it gives more (the process is killed then)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            return None
        chunks.append(chunk)


async def _read_start(stream: asyncio.StreamReader) -> bytes:
    """The first _STDERR_KEPT bytes of `stream`, read to its end (so the process never blocks on a full pipe)."""
    kept = b""
    while chunk := await stream.read(_READ_CHUNK):
        if len(kept) < _STDERR_KEPT:
            kept += chunk[:_STDERR_KEPT - len(kept)]
    return kept


@contextlib.asynccontextmanager
async def _input_file(pdf: bytes) -> AsyncIterator[Path]:
    """The document in a private temporary directory (mode 0700), removed afterwards; written in a thread, not on
    the event loop (up to the input policy's size)."""
    directory = await asyncio.to_thread(tempfile.mkdtemp, prefix="acar-preview-")
    path = Path(directory) / "document.pdf"
    try:
        await asyncio.to_thread(path.write_bytes, pdf)
        yield path
    finally:
        await asyncio.to_thread(shutil.rmtree, directory, True)
