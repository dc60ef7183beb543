"""ausm-stream: AUSM video segmentation served as a distributed stream-processing pipeline.

The subpackages live in top-level folders of the repository (``model/``, ``pipeline/``,
``operators/``, ``deploy/``) and are mapped in here by setuptools' ``package-dir``, so
``from ausm_stream.model import AUSM`` works and nothing generic lands in site-packages.
"""

from ausm_stream.errors import AUSMStreamError

__version__ = "0.1.0"

__all__ = ["AUSMStreamError", "__version__"]
