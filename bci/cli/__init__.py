"""The ``bci`` command line: thin handlers that turn flags into options and call the library."""
