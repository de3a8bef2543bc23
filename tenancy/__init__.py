"""Tenants: who may send signals, and from which sources (:mod:`tenancy.registry`)."""

from tenancy.registry import (
    PostgresTenants,
    StaticTenants,
    TenantDirectory,
    TenantEntry,
    list_tenants,
    remove_tenant,
    seed_tenants,
    upsert_tenant,
)

__all__ = [
    "PostgresTenants",
    "StaticTenants",
    "TenantDirectory",
    "TenantEntry",
    "list_tenants",
    "remove_tenant",
    "seed_tenants",
    "upsert_tenant",
]
