"""Tools around trained models: :mod:`~sifa.tools.visualize`, pictures of what SIFA attends to."""
