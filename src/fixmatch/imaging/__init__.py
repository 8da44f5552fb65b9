"""Image files and pixels, shared by the data loaders, inference and the server: the one decoding
policy every image read goes through (decoding.py) and how an image is framed to a square (framing.py)."""
