"""Time and place of a federation (``[geo]``; docs/geo.md).

- :mod:`~fedglobal.geo.places`: where each region is, its compute and links
  (a table, ``[geo.regions]`` overrides, or the offline
  :mod:`~fedglobal.geo.gazetteer`);
- :mod:`~fedglobal.geo.network`: great-circle distance, propagation and
  transfer time of a message;
- :mod:`~fedglobal.geo.compute`: training FLOPs per step, counted from the Keras model;
- :mod:`~fedglobal.geo.availability`: local-time windows;
- :mod:`~fedglobal.geo.clock`: the simulated clock and its policies (sync,
  deadline, overcommit);
- :mod:`~fedglobal.geo.grid`: the clock where the ServerApp sends and receives;
- :mod:`~fedglobal.geo.setup`: the clock of a run, from its config;
- :mod:`~fedglobal.geo.asynchronous`: server steps by arrival (``fedbuff``, ``fedasync``);
- :mod:`~fedglobal.geo.hierarchy`: groups of regions and their links (``hierfavg``);
- :mod:`~fedglobal.geo.outputs`: sim_times.csv, summary fields and plots;
- :mod:`~fedglobal.geo.target`: ``"r2 >= 0.8"`` targets.

Submodules are imported where they are used (this package imports none), so
loading an experiment stays cheap.
"""
