"""Python client and CLI for the moe-avatar gRPC API."""
