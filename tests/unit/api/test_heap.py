"""A serving process freezes its heap once its lifespan has started (api.app.freeze_heap), so the garbage collector
stops walking the service graph on every full collection; a test's application never does."""

from __future__ import annotations

import gc
import importlib

from api.app import create_app, serving_app
from api.deps import Services
from api.server import APP_FACTORY


async def test_a_serving_app_freezes_the_heap_once_started_and_a_plain_app_does_not(initialized: Services) -> None:
    assert gc.get_freeze_count() == 0
    plain = create_app(services=initialized)
    async with plain.router.lifespan_context(plain):
        assert gc.get_freeze_count() == 0
    serving = create_app(services=initialized, freeze_after_start=True)
    try:
        async with serving.router.lifespan_context(serving):
            assert gc.get_freeze_count() > 10_000  # the modules and the service graph: far more than this
    finally:
        gc.unfreeze()  # the rest of this test process collects as before


def test_acar_serve_builds_each_worker_s_application_with_the_serving_factory() -> None:
    module, _, name = APP_FACTORY.partition(":")
    assert getattr(importlib.import_module(module), name) is serving_app
