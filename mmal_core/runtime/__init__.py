"""Where runs execute: worker processes or Ray (``executors``), and the container image (``docker``).

``executors`` needs nothing beyond the core (Ray only for ``--executor ray``: the ``ray``
extra); ``docker`` needs the ``docker`` extra.
"""
