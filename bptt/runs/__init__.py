"""Runs: a run's configuration, training loop, directory and artifacts; streams; sampling;
sweeps and their reports; and the experiments behind ``bptt gradflow``, ``credit`` and
``fixedpoint``.

Bottom to top: ``rundir`` (the run directory's files), ``streams`` (stateful training and
scoring), ``config`` (``TrainConfig``, ``prepare``, the options' values, the cell grammar),
``build`` (model, optimizer, predictions), ``walks`` (how a run feeds its task to its trainer),
``load`` (``load_run``: a trained run read back and checked), ``artifacts`` (``result.json``,
figures, the summary line), ``train`` (``train``, ``resume``, ``evaluate``), then ``sample``,
``sweep``, ``report`` and ``experiments``.  Nothing here imports the command line or its
toolkit: messages and progress go to the callables a caller passes.
"""
