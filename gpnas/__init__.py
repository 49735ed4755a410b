"""gpnas: neural architecture search by co-evolving architectures (males) and
learning-curve predictor formulas (females) in one DEAP engine."""

__version__ = "0.1.0"
