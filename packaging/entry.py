"""PyInstaller entry point: the frozen binary runs the CLI and exits with its code."""

from fastpaca.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
