"""Where evaluations run and what a run keeps: the evaluation tasks (training
nanoGPT, or replaying a table of recorded curves) and tables, the archive
(SQLite cache of every evaluation), the run folder (snapshots as data,
logbook, lock), the evaluation worker, and the parallel maps (serial, process
pool, Ray).

It may import ``gpnas.train`` (the worker trains), ``gpnas.predict`` (results
become curves), ``gpnas.config`` and ``gpnas.errors``; never the search, the
report or the CLI. It is the only part that imports multiprocessing or Ray.
"""
