"""The service-level objectives per tenant tier (``slos.json``), shipped as package data; read
them through :func:`core.slo.load`."""
