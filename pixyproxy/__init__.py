"""PixyProxy: an image-generation REST service (prompt in, stored image out)."""

__version__ = "0.1.0"
