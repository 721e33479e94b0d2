"""Modules, layers, initialisers, losses and recurrent networks."""

from bptt.nn.module import Module, Parameter
from bptt.nn.layers import Linear, Sequential, Identity, Tanh, Sigmoid, ReLU, LeakyReLU, Dropout
from bptt.nn import init
