"""The Avro contracts (``avro/*.avsc``), shipped as package data; read them through
:mod:`core.resources`."""
