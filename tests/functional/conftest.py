"""Fixtures of the functional tests."""

from __future__ import annotations

import pytest

from tests.functional.helpers import InProcessAcar


@pytest.fixture
def acar(cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> InProcessAcar:
    """`acar` run in-process on the test database (the environment of `cli_env`)."""
    return InProcessAcar(cli_env, monkeypatch, capsys)
