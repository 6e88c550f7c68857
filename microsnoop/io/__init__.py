"""File I/O for the core: images in, manifests and tables out."""
