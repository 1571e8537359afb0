"""Invoice Manager: batch billing of sales picked by saved scenarios.

Pure parts (no I/O): ``ids``, ``rules``, ``fold``, ``sales`` (parsing), ``plan``,
``pdf`` (bytes in memory). I/O at the edges: ``store`` (SQLite view in the
billing home), ``remote`` (engine pull/push), ``invoicer`` (device agent),
``delivery`` (SMTP, print), ``process`` (the run), ``bench``.
"""
