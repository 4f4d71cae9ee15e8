"""tui-mail: a keyboard-driven terminal mail client (Textual) with a bundled relay."""

__version__ = "0.1.0"
