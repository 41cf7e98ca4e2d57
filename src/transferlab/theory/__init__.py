"""transferlab.theory (in progress)."""
