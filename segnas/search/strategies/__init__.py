"""The built-in search methods, one file each (registered with ``@strategy``)."""
