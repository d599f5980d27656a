"""minivae: variational autoencoders written by hand in NumPy."""
