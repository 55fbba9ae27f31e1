"""Opening ZenML's store once per process, under a lock that concurrent audits share.

Two processes that open a fresh local ZenML store at once both run its database migrations, and one of them
fails ("The ZenML database has never been migrated with alembic before"): two audits started together on a
new machine lost one. `open_store` opens (and, the first time, creates and migrates) the store while holding
an exclusive lock on a file in ZenML's config directory, so the second process waits and then finds the
store ready. Opening an existing store, local or a ZenML server, only takes the lock briefly.
"""
from __future__ import annotations

import fcntl
from pathlib import Path

LOCK_NAME = "influencegate-store.lock"


def open_store() -> None:
    """Open the active ZenML store (creating and migrating a new local one) under an exclusive lock on
    `<ZenML config directory>/influencegate-store.lock`."""
    from zenml.client import Client
    from zenml.config.global_config import GlobalConfiguration

    lock_file = Path(GlobalConfiguration().config_directory) / LOCK_NAME
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            Client().zen_store
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
