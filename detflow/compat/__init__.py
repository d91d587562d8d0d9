"""Routes for code written against other frameworks' interfaces (see :mod:`detflow.compat.libertem`)."""
