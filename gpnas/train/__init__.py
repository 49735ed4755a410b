"""The trainer: data, the nanoGPT-equivalent model, and training with exact resume.

It turns (architecture, budget, seed, text) into a learning curve and a
checkpoint. It knows nothing of evolution or predictors: it may import torch,
numpy, ``gpnas.config`` and ``gpnas.errors``, never DEAP, ``gpnas.predict`` or
anything above it.
"""
