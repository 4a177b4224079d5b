"""Load a file under ``scripts/`` as a module (the scripts are not a package), for the tests of their functions."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` executed as module ``<name>_script`` (registered in ``sys.modules`` so dataclasses and
    pickling inside it resolve); raises ``FileNotFoundError`` for a missing script."""
    path = ROOT / "scripts" / f"{name}.py"
    if not path.exists():
        raise FileNotFoundError(path)
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
