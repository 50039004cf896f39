"""Search spaces by name, and architecture files (``{"space", "version", "arch"}`` JSON).

The contract every space implements, and the registry, are in ``segnas.spaces.base``.
"""

from segnas.spaces.base import (Architecture, DecisionSpace, SearchSpace, Supernet, arch_key, build_from_arch, get_space,
                                list_spaces, read_arch_file, register_space, resolve_space, save_arch, space_class)

__all__ = ["Architecture", "DecisionSpace", "SearchSpace", "Supernet", "arch_key", "build_from_arch", "get_space", "list_spaces",
           "read_arch_file", "register_space", "resolve_space", "save_arch", "space_class"]
