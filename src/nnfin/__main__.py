"""``python -m nnfin`` runs the command-line interface."""

from nnfin.cli import main

if __name__ == "__main__":
    main()
