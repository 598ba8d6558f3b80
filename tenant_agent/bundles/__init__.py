"""Tenant side of bundle distribution: pull + verify + install, and the local resolve API."""

from aggregation.bundle_errors import BundleRefused
from tenant_agent.bundles.client import BundleClient, PullResult, TrustRootNotPinned
from tenant_agent.bundles.resolve import (
    Arm,
    InstalledBundleRefused,
    Resolution,
    Resolver,
    ResolveServer,
    SessionResolution,
    serve_resolve,
)
from tenant_agent.bundles.store import BundleStore

__all__ = [
    "Arm",
    "BundleClient",
    "BundleRefused",
    "BundleStore",
    "InstalledBundleRefused",
    "PullResult",
    "Resolution",
    "ResolveServer",
    "Resolver",
    "SessionResolution",
    "TrustRootNotPinned",
    "serve_resolve",
]
