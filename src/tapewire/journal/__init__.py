"""The durable hand-off between the proxy and the store: append-only segment files and the
ingester that drains them."""
