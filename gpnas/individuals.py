"""DEAP creator classes, made here and nowhere else.

DEAP's ``creator`` writes classes into its own module namespace; doing that in
one place keeps them defined exactly once per process (workers started with
``spawn`` import this module and get the same classes), and every other module
imports them from here.

- ``Male``: a fixed-length genome (list of floats, one gene per hyperparameter),
  minimising a fitness (predicted final validation loss).
- ``Female``: a genetic-programming tree (``deap.gp.PrimitiveTree``), minimising
  her prediction error; a second weight carries tree size for parsimony reports.
"""

from deap import base, creator, gp

if not hasattr(creator, "FitnessMin"):
    creator.create("FitnessMin", base.Fitness, weights=(-1.0,))
if not hasattr(creator, "Male"):
    creator.create("Male", list, fitness=creator.FitnessMin)
if not hasattr(creator, "Female"):
    creator.create("Female", gp.PrimitiveTree, fitness=creator.FitnessMin)

FitnessMin = creator.FitnessMin
Male = creator.Male
Female = creator.Female
