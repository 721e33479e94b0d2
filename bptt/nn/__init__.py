"""Modules, layers, initialisers, losses and recurrent networks."""

from bptt import functional  # noqa: F401  (binds Tensor's operators, which modules' users apply)
from bptt.nn.module import Module, Parameter
from bptt.nn.layers import Linear, Embedding, Sequential, Identity, Tanh, Sigmoid, ReLU, LeakyReLU, Dropout
from bptt.nn import init
from bptt.nn.losses import (mse_loss, l1_loss, huber_loss, binary_cross_entropy_with_logits,
                             cross_entropy, MSELoss, L1Loss, HuberLoss, BCEWithLogitsLoss,
                             CrossEntropyLoss)
from bptt.nn.registry import CellType, Option, register as register_cell, names as cell_names
from bptt.nn.recurrent import Cell, Recurrent, SequenceModel
from bptt.nn.language_model import LanguageModel
# the package's cells register here, once: importing any part of bptt.nn runs this module first,
# so a lookup in the registry (which imports no cell) finds them all
from bptt.nn import cells  # noqa: F401
from bptt.nn.cells.rnn import RNNCell, RNN
from bptt.nn.cells.lstm import LSTMCell, LSTM
from bptt.nn.cells.gru import GRUCell, GRU
from bptt.nn.fixedpoint import FixedPoint, FixedPointError
