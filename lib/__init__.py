"""Shared library of the DSM on-premises agent."""

from __future__ import annotations

import importlib.util
import sys

__version__ = "0.1.0"

_RUNTIME_MODULES = {
    "requests": "requests",
    "tenacity": "tenacity",
    "dotenv": "python-dotenv",
    "cryptography": "cryptography",
    "pyVmomi": "pyvmomi",
}


def require_runtime() -> None:
    """Exit with one clear line, not a traceback, when the program runs outside its virtualenv."""
    missing = [pkg for mod, pkg in _RUNTIME_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        print(
            f"error: missing Python packages: {', '.join(missing)} (python: {sys.executable})",
            file=sys.stderr,
        )
        print(
            "hint: run it with the project's virtualenv (.venv/bin/python), or install them: "
            "pip install -r requirements.txt",
            file=sys.stderr,
        )
        sys.exit(2)
