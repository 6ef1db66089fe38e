"""PyInstaller entry point: the frozen binary runs the CLI."""

from fastpaca.cli import main

if __name__ == "__main__":
    main()
