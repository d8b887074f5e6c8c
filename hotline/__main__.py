"""Allow ``python -m hotline`` as well as the ``hotline`` console command."""

from hotline.cli import main

main()
