"""Default paths that work from any folder: ``models/default``, ``prompts_store``, ``.cache/units``.

The committed backbone, demo stores and units cache live in the checkout the package runs from (``make``
installs it editable). A relative default is taken from the current folder when it exists there (a checkout,
or a user's own layout), else from the installation, else it is returned as given, and the command that
fails on it names the option or setting to pass.
"""

from __future__ import annotations

from pathlib import Path

INSTALL_ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages) holding speechprompt/


def default_path(relative: str) -> Path:
    """``relative`` from the current folder if it exists there, else from :data:`INSTALL_ROOT` if it exists
    there, else ``relative`` unchanged (a cache folder is then created where the command runs)."""
    here = Path(relative)
    if here.exists():
        return here
    installed = INSTALL_ROOT / relative
    return installed if installed.exists() else here
