"""The application functions: each puts a config, data, the engine and the run folder together.

``fit``, ``resume``, ``cv``, ``tune``, ``lr_find``, ``predict`` and the runs table; the command
line (:mod:`nnfin.commands`) parses, calls one of these and prints. They are also the root
functions of the package (``nnfin.fit``, ``nnfin.tune``...).
"""
