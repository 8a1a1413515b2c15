"""``gridshift simulate``: replay real grid data and forecasts through the real planner.

One layer per module, data flowing downwards:

- ``series``    read actuals and forecast vintages (CSV) into step functions; what a planner
                may see at a decision time; synthetic noisy forecasts.
- ``workloads`` the jobs to replay: a jobs CSV, or the seeded ``ml-workday`` and ``nightly``
                generators; whole or interruptible.
- ``engine``    the virtual clock: each policy's decisions call ``scheduler.placement.plan``
                (whole jobs) and ``scheduler.chunking.plan_chunks`` (interruptible jobs)
                with ``now`` injected; a dispatcher with the daemon's slot rules starts,
                pauses and resumes jobs.
- ``results``   emissions from the actuals, one row per policy and region; table, JSON, plot.
- ``convert``   the two real forecast archives (UK fw48h summary, WattTime) to simulator CSVs.
- ``cli``       the typer commands; imports the rest lazily so ``gridshift`` starts fast.
"""
