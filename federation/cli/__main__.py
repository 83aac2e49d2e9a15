"""``python -m federation.cli``: the same as the ``fedjoint`` console script."""

from federation.cli import main

main()
