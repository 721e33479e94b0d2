"""The experiments of ``bptt gradflow``, ``bptt credit`` and ``bptt fixedpoint``: each measures,
writes its figure and CSV, and returns its rows."""
