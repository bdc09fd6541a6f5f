"""The write-ahead log: byte format (``format``), writer (``writer``) and reader (``reader``).

See SPEC.md, "WAL", for the byte layout and the durability modes, and
:mod:`inmem.recovery` for how the log is read back on open. Importing this
package installs the optional C frame checker (:mod:`inmem.wal.fast`) over
the pure-Python one before any module binds a name of :mod:`inmem.wal.format`.
"""

from . import fast as _fast

_fast.install()
