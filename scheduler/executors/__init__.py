"""Executors: how a planned job runs.

``local`` runs jobs on this machine, each under its job wrapper (``launcher``,
``jobwrapper``); ``slurm`` hands the jobs of Slurm regions to Slurm. The daemon's tick
decides what is due; each executor starts it, follows it to its end through the store's
state transitions, and re-adopts what an earlier daemon left running.
"""
