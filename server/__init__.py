"""moe-avatar gRPC server: loads model bundles and streams avatar textures. Never imports torch."""
