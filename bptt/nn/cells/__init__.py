"""The package's recurrent cells, one module each; importing this package registers them all.

``rnn``, ``lstm`` and ``gru`` are PyTorch's cells (and declare its ``RNNCell``/``RNN``, ...);
``indrnn`` is the IndRNN of Li et al. 2018.  A new cell is one new module here, imported below,
plus its docs: see docs/architecture.md, "Adding a cell".
"""

from bptt.nn.cells import rnn, lstm, gru, indrnn  # noqa: F401  (each registers its cell)
