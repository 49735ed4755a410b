"""The individuals of the search: DEAP creator classes, made here and nowhere else.

DEAP's ``creator`` writes classes into its own module namespace; doing that in
one place keeps them defined exactly once per process (workers started with
``spawn`` import this module and get the same classes), and every other module
imports them from here.

- ``Male``: a fixed-length genome (list of floats, one gene per hyperparameter),
  minimising a fitness (predicted final validation loss).
- ``Female``: a genetic-programming tree, minimising her prediction error. She is
  the predictor side's ``predict.trees.Tree`` (a DEAP PrimitiveTree with its own
  fitness class), because ``gpnas predictors fit`` evolves the same trees
  without the search.
"""

from deap import base, creator

from gpnas.predict.trees import Tree

if not hasattr(creator, "FitnessMin"):
    creator.create("FitnessMin", base.Fitness, weights=(-1.0,))
if not hasattr(creator, "Male"):
    creator.create("Male", list, fitness=creator.FitnessMin)

FitnessMin = creator.FitnessMin
Male = creator.Male
Female = Tree
