"""Page previews (signing.core.preview): real pdftoppm runs on PDFs built here, ordinary and hostile; every bound of
the policy stops a hostile document with a PreviewError, never a hang or an unbounded renderer."""

from __future__ import annotations

import shutil
import struct

import pytest

from signing.core.preview import (
    PNG_SIGNATURE,
    PagePreview,
    PreviewError,
    PreviewLimitExceeded,
    PreviewPolicy,
    PreviewRenderer,
    PreviewTooManyPages,
    PreviewUnavailable,
    png_size,
)
from tests.approval_tools import build_pdf, flate_bomb, text_page

pytestmark = pytest.mark.nodb  # no database: run once, in the SQLite pass (Makefile)

FAST = PreviewPolicy(max_side=600, timeout_seconds=20, cpu_seconds=2)
"""Tight CPU time, so that a bomb is stopped soon."""


def assert_png(preview: PagePreview, page: int, side: int) -> None:
    png = preview.png
    assert png.startswith(PNG_SIGNATURE) and png.endswith(b"IEND\xaeB`\x82")
    assert png_size(png) == (preview.width, preview.height)
    assert preview.page == page and max(preview.width, preview.height) == side


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """1 GiB of content inflated from 1 MiB: the renderer streams it, taking far longer than the bounds."""
    return build_pdf([((595, 842), flate_bomb(1 << 30), b"FlateDecode")])


@pytest.fixture(scope="module")
def renderer() -> PreviewRenderer:
    for tool in ("pdftoppm", "pdfinfo", "prlimit"):
        assert shutil.which(tool), f"{tool} is missing: install Debian poppler-utils and util-linux (make system-deps)"
    return PreviewRenderer(FAST)


async def test_every_page_of_an_ordinary_pdf(renderer: PreviewRenderer) -> None:
    pdf = build_pdf([text_page(f"Page {n}") for n in (1, 2, 3)])
    assert await renderer.page_count(pdf) == 3
    previews = await renderer.render_document(pdf)
    assert len(previews) == 3
    for number, preview in enumerate(previews, start=1):
        assert_png(preview, number, 600)
        assert preview.height == 600 and 420 <= preview.width <= 425  # A4 portrait: 595 x 842 points
    assert previews[0].png != previews[1].png  # each page is its own drawing


async def test_one_page(renderer: PreviewRenderer) -> None:
    pdf = build_pdf([text_page("one"), ((842, 595), b"0 1 0 rg 0 0 842 595 re f", None)])
    preview = await renderer.render_page(pdf, 2, pages=2)
    assert_png(preview, 2, 600)
    assert preview.width == 600 and preview.height < 600  # landscape


async def test_a_huge_page_is_rendered_within_the_pixel_bound(renderer: PreviewRenderer) -> None:
    """14400 x 14400 points (200 inches, the most PDF allows) at 300 dpi would be a 60000-pixel-square bitmap."""
    pdf = build_pdf([((14400, 14400), b"0 0 1 rg 0 0 14400 14400 re f", None)])
    preview = await renderer.render_page(pdf, 1, pages=1)
    assert_png(preview, 1, 600)
    assert (preview.width, preview.height) == (600, 600)


async def test_a_bitmap_over_the_memory_bound_is_refused() -> None:
    """With the pixel bound set high and the address space low, poppler cannot allocate the page's bitmap."""
    pdf = build_pdf([((14400, 14400), b"0 0 1 rg 0 0 14400 14400 re f", None)])
    tight = PreviewRenderer(PreviewPolicy(max_side=10_000, memory_bytes=64 * 1024 * 1024, cpu_seconds=5))
    with pytest.raises(PreviewLimitExceeded) as caught:
        await tight.render_page(pdf, 1, pages=1)
    assert caught.value.code == "preview_limit_exceeded"


async def test_a_flate_bomb_is_stopped_by_the_cpu_bound(renderer: PreviewRenderer, bomb: bytes) -> None:
    with pytest.raises(PreviewLimitExceeded, match="CPU time"):
        await renderer.render_page(bomb, 1, pages=1)


async def test_a_flate_bomb_is_stopped_by_the_timeout(bomb: bytes) -> None:
    pdf = bomb
    slow = PreviewRenderer(PreviewPolicy(max_side=600, timeout_seconds=0.5, cpu_seconds=60))
    with pytest.raises(PreviewLimitExceeded, match="longer than 0.5 seconds"):
        await slow.render_page(pdf, 1, pages=1)


async def test_output_over_its_bound_is_refused() -> None:
    pdf = build_pdf([text_page("big")])
    small = PreviewRenderer(PreviewPolicy(max_side=600, max_png_bytes=200))
    with pytest.raises(PreviewLimitExceeded, match="more than 200 bytes"):
        await small.render_page(pdf, 1, pages=1)


async def test_the_page_bound(renderer: PreviewRenderer) -> None:
    few = PreviewRenderer(PreviewPolicy(max_pages=2))
    pdf = build_pdf([text_page(str(n)) for n in range(3)])
    with pytest.raises(PreviewTooManyPages) as caught:
        await few.render_document(pdf)
    assert caught.value.code == "preview_too_many_pages"
    with pytest.raises(PreviewTooManyPages):
        await few.render_page(pdf, 1, pages=3)
    with pytest.raises(PreviewError, match="no page 4"):
        await renderer.render_page(pdf, 4, pages=3)


async def test_not_a_pdf(renderer: PreviewRenderer) -> None:
    with pytest.raises(PreviewError) as caught:
        await renderer.render_page(b"%PDF-1.7\nthis is no PDF at all", 1, pages=1)
    assert type(caught.value) is PreviewError and caught.value.code == "preview_failed"


async def test_a_missing_renderer_is_a_clear_error() -> None:
    missing = PreviewRenderer(FAST, pdftoppm="/nonexistent/pdftoppm")
    with pytest.raises(PreviewError):
        await missing.render_page(build_pdf([text_page("x")]), 1, pages=1)
    unavailable = PreviewRenderer(FAST)
    unavailable._pdftoppm = None
    with pytest.raises(PreviewUnavailable) as caught:
        await unavailable.render_page(build_pdf([text_page("x")]), 1, pages=1)
    assert caught.value.status_code == 503


def test_png_size() -> None:
    assert png_size(PNG_SIGNATURE + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 7, 9)) == (7, 9)
    assert png_size(b"GIF89a" + b"\x00" * 30) is None


def test_policy_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="positive bounds"):
        PreviewPolicy(max_side=0)
    with pytest.raises(ValueError, match="positive bounds"):
        PreviewPolicy(memory_bytes=1024)
