"""Image files and pixels, shared by the data loaders, inference and the server: how an image is
framed to a square (framing.py)."""
