"""The leaderboard service: benchmarks by name, ranking, submissions and the server.

- ``benchmarks``: registered benchmarks by name or hash, availability, ``mmal bench run``;
- ``ranking``: curves of finished runs, AUBC ranking with intervals, the renderers of
  ``mmal leaderboard``;
- ``submission``: the submission document and its verification by replay;
- ``server/``: the FastAPI server (``mmal serve``), its storage, trust rules and worker.

Needs the ``report`` extra for ranking and the ``server`` extra for the server.
"""
