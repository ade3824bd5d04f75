"""Face swapping: the classical mesh backend (embedded default) and the backend interface."""
