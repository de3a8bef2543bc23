"""The Rego policies and their data, shipped as package data; read them through
:mod:`core.resources`."""
