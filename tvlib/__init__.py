"""tvlib: task vectors in in-context learning, the library behind the companion book.

Subpackages and modules are imported explicitly (``from tvlib import engine``); importing
``tvlib`` itself stays cheap so that the build tooling does not pull in torch.
"""

__version__ = "0.1.0"
