"""The curriculum's ops (notebooks 01 to 04). Importing this package registers them."""

from . import elementwise, reductions, matmul, conv  # noqa: F401,I001  (curriculum order)
from .. import engine  # noqa: F401,E402  (05_engine: the graph traversal and training checks)
