"""The write-ahead log: byte format (``format``), writer (``writer``) and reader (``reader``).

See SPEC.md, "WAL", for the byte layout and the durability modes, and
:mod:`engine.recovery` for how the log is read back on open.
"""
