"""Shared pytest setup: keep every test offline and away from ~/.cache."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_hf_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point HF_HOME at a throwaway folder so no test touches the user's cache."""
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf_home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
