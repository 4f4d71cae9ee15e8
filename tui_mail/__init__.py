"""tui-mail: a keyboard-driven terminal mail client (Textual) with a bundled relay."""

def _version() -> str:
    """The installed distribution's version (pyproject.toml is the one place it is written)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tui-mail")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"



def __getattr__(name: str) -> str:
    # __version__ on first use, not at import: importlib.metadata costs ~25 ms of every start
    if name == "__version__":
        value = globals()["__version__"] = _version()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
