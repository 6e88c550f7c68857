"""Platform services over the core library: settings, storage, registry, feature store, search API."""
