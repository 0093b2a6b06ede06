"""``python -m fhirgraph`` runs the command line."""

from fhirgraph.cli import main

main()
