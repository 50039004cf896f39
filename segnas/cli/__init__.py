"""The `segnas` command."""
