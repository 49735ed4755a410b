"""What a finished run or ablation leaves for people: summaries, formula
tables, plots, ablation tables with intervals.

It may import ``gpnas.search`` (it reads the engine and its females),
``gpnas.runs`` (it writes into run folders), ``gpnas.predict``,
``gpnas.config`` and ``gpnas.errors``; never the jobs or the CLI, and it never
prints: it returns text and writes files.
"""
