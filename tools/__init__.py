"""Developer and user tools that ship beside the engine: ``waldump``, ``faultfs``, ``crashsim``, ``corruptsim``.

Run them from a checkout root as modules (``python -m tools.crashsim --help``).
Each imports this checkout's ``engine/`` as ``inmem`` (:func:`tests.checkout.use_checkout`).
"""
