"""saerad: grounded chest X-ray reports from sparse features of a ViT class token."""

__version__ = "0.1.0"
