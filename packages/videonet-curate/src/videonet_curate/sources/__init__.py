"""Where `build`'s candidate clips come from: the :class:`~videonet_curate.sources.base.Source` seam
(``base.py``), one module per source (``local.py``, ``kinetics.py``, ``urls.py``, with ``remote.py`` what
the network ones share) and the name -> class registry (``registry.py``)."""
