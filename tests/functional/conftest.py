from __future__ import annotations

from pathlib import Path

import pytest

from api.deps import Services
from api.settings import Settings


@pytest.fixture
def cli_env(settings: Settings, services: Services, tmp_path: Path) -> dict[str, str]:
    """Environment for real `acar` processes on the test database (rows are wiped by `services`)."""
    from tests.functional.helpers import acar_env

    return acar_env({
        "ACAR_DATABASE_URL": settings.resolved_database_url,
        "ACAR_DATA_DIR": str(tmp_path / "data"),
        "ACAR_MASTER_KEY_FILE": str(settings.resolved_master_key_file),
        "ACAR_KEY_CACHE_SECONDS": "0",
    })
