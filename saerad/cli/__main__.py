"""``python -m saerad.cli`` (what ``accelerate launch -m saerad.cli ...`` runs)."""

from saerad.cli import main

main()
