"""``bridge redrive``: dead letters sent again through the real pipeline once their cause is fixed.

* :mod:`~bridge.redrive.select` - pure: a dead letter's ``__bridge.errors.*`` headers read back,
  and which dead letters a redrive selects (``--code``, ``--stage``, ``--source-topic``,
  ``--since``/``--until``).
* :mod:`~bridge.redrive.view` - a dead letter seen as the record it was (the adapter handed to
  the pipeline), and the bound that ends a redrive at the end offsets it started with.
* :mod:`~bridge.redrive.command` - the command: consumer, pipeline, progress bar, summary, dry run.
"""
