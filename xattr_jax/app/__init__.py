"""The applications built on the library: the ``xattr`` command line and what only it and its users run.

* :mod:`~xattr_jax.app.cli` — ``xattr`` (the console script): ``convert``, ``demo``, ``explain``, ``eval``.
* :mod:`~xattr_jax.app.explain_cli`, :mod:`~xattr_jax.app.eval_cli` — ``xattr explain`` and ``xattr eval``
  over the dataset harness (:mod:`xattr_jax.harness`); :mod:`~xattr_jax.app.cli_common` — what they share
  (models by name, datasets, option flags, one-line usage errors).
* :mod:`~xattr_jax.app.explain_image` — one image to a figure file (``xattr explain IMAGE --out x.png``).
* :mod:`~xattr_jax.app.demo` — ``xattr demo``: a shipped model, every method, PNGs and a pointing table.
* :mod:`~xattr_jax.app.train` — trains the shipped synthetic-benchmark models
  (``python -m xattr_jax.app.train``).
* :mod:`~xattr_jax.app.explanation_training` — training through an attribution (an explanation loss).

The library (the engine, ``models``, ``data``, ``metrics``, ``viz``, ``harness``) never imports this package.
"""
