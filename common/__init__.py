"""Code shared by training, export and serving."""
