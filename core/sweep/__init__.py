"""Parameter sweeps of the backtest on Dask: ``perpcarry sweep GRID.toml``.

``grid`` reads the grid file and expands it into backtest jobs, each with the exact
``perpcarry backtest`` command that reproduces it; ``tasks`` runs a batch of jobs on a
worker; ``cluster`` connects to (or starts) the Dask cluster and streams results back;
``results`` keeps the journal that ``--resume`` reads, ranks and writes the tables;
``heatmaps`` draws the metric over every two swept parameters.
"""
