"""bptt: backpropagation through time on one reverse-mode tape, with gradient-flow diagnostics.

Every public name of the package is imported on first use (the list is ``__init__.pyi``), so
``import bptt`` and the ``bptt`` command start quickly.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)

__version__ = "0.1.0"
