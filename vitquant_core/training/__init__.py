"""Training the project's reference models on CIFAR-10: a side concern of the library.

``python -m vitquant_core.training.train --help`` trains one model; the recipes, the
time-budget planning and the resumable state are described in :mod:`.train`.
"""
