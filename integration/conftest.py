"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from integration.guest import GuestImage
from integration.guest.skip import image_or_skip


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    return image_or_skip()
