"""asc-search: multi-objective search for small acoustic-scene classifiers that fit a device.

Subpackages follow the design card (DESIGN.md): ``data``, ``frontends``, ``search_spaces``,
``constraints``, ``trainers``, ``search``, ``deploy``, ``report``; ``cli`` is the command line.
"""

from asc_search._errors import AscSearchError, UserInputError

__version__ = "0.1.0"
__all__ = ["AscSearchError", "UserInputError", "__version__"]
