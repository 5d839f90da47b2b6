"""Secret settings: a key given directly, else read from the Prefect Secret block a setting names.

Shared by every endpoint that needs a key, so that a key never travels in a flow parameter, a report or a log."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from tasks.errors import SettingsError


def secret_value(value: SecretStr, block: str, setting: str) -> str:
    """The given secret, else the value of the Prefect Secret block named `block`, else ''.

    `setting` is the environment variable that names the block (RAGOPS_EMBED_API_KEY_BLOCK, say): errors name it.
    """
    secret = value.get_secret_value()
    if secret or not block:
        return secret
    from prefect.blocks.system import Secret

    direct = setting.removesuffix("_BLOCK") if setting.endswith("_BLOCK") else "the key itself"
    try:
        loaded: Any = Secret.load(block)  # a Secret here (sync caller), typed also as a coroutine
        stored = loaded.get()
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        raise SettingsError(
            f"{setting} names the Prefect Secret block {block!r}, which could not be loaded ({exc}); create it "
            f"with `prefect block create secret` or set {direct}"
        ) from exc
    if not isinstance(stored, str):
        raise SettingsError(f"the Prefect Secret block {block!r} ({setting}) must hold a string API key")
    return stored
