"""The library behind ``gpnas evolve`` and ``gpnas ablate``: start, resume and
finish a run (preset, data, archive, map and engine wired together, the report
written at the end), an ablation's many runs at equal compute, and the build
of a table (a preset's grid trained to completion).

This is the one place that joins the search with the report, so it sits
above both: it may import ``gpnas.report``, ``gpnas.search``, ``gpnas.runs``,
``gpnas.config`` and ``gpnas.errors``; never the CLI, and it never prints.
"""
